"""``ctsam manifest``: per-case manifest.json (input hashes, versions, checkpoint sha256, config digest, timings)."""

from __future__ import annotations

import argparse

HELP = "write a case's manifest.json: input/output hashes, software versions, checkpoint sha256, config digest, timings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "case_dir",
        nargs="?",
        default=None,
        metavar="RESULTS/CASE",
        help="the case's results folder: names files relative to it; with --scan, also lists its files",
    )
    parser.add_argument(
        "--scan",
        action="store_true",
        help="record every file under RESULTS/CASE as an output (JSON files also as sidecars)",
    )
    parser.add_argument(
        "--input", dest="inputs", action="append", default=[], metavar="PATH", help="input file or folder (repeatable)"
    )
    parser.add_argument(
        "--output-file",
        dest="outputs",
        action="append",
        default=[],
        metavar="PATH",
        help="stage output to hash (repeatable)",
    )
    parser.add_argument(
        "--checkpoint",
        dest="checkpoints",
        action="append",
        default=[],
        metavar="PATH",
        help="model weights (repeatable)",
    )
    parser.add_argument(
        "--benchmark",
        dest="benchmarks",
        action="append",
        default=[],
        metavar="TSV",
        help="Snakemake benchmark file (repeatable; stage = file stem)",
    )
    parser.add_argument(
        "--benchmarks-dir",
        default=None,
        metavar="DIR",
        help="every *.tsv in DIR is a stage's benchmark (stage = file stem); a missing DIR adds none",
    )
    parser.add_argument(
        "--sidecar",
        dest="sidecars",
        action="append",
        default=[],
        metavar="JSON",
        help="stage sidecar with timing_s (repeatable)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="manifest.json", help="where to write the manifest")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctsam.config import load_config
    from ctsam.errors import ConfigError
    from ctsam.io.atomic import atomic_write_json
    from ctsam.manifest import build_manifest, discover_case_files

    outputs, sidecars, benchmarks = list(args.outputs), list(args.sidecars), list(args.benchmarks)
    if args.scan:
        if not args.case_dir:
            raise ConfigError("--scan needs the case's results folder", fix="pass RESULTS/CASE before the options")
        found = discover_case_files(args.case_dir, exclude=(Path(args.output).name,))
        outputs += [p for p in found["outputs"] if str(p) not in outputs]
        sidecars += [p for p in found["sidecars"] if str(p) not in sidecars]
        benchmarks += [p for p in found["benchmarks"] if str(p) not in benchmarks]
    if args.benchmarks_dir and Path(args.benchmarks_dir).is_dir():
        benchmarks += [
            str(p) for p in sorted(Path(args.benchmarks_dir).glob("*.tsv")) if str(p) not in map(str, benchmarks)
        ]
    doc = build_manifest(
        case=args.case or (Path(args.case_dir).name if args.case_dir else None),
        inputs=args.inputs,
        outputs=outputs,
        checkpoints=args.checkpoints,
        benchmarks=benchmarks,
        sidecars=sidecars,
        config=load_config(args.config),
        case_dir=args.case_dir,
    )
    atomic_write_json(args.output, doc)
    return 0
