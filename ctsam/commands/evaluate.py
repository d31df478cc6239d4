"""``ctsam evaluate``: interactive protocol (Dice after 1..10 clicks, NoC@85/90) and the automatic
seed -> refine pipeline against ground truth, coarse Dice beside it.

    ctsam evaluate --data TEST.tsv --checkpoint builtin:demo_micro -o eval/
    ctsam demo-cohort demo --cases 3 && ctsam evaluate --data demo/samples.tsv --checkpoint MODEL -o eval/

TEST.tsv: ``ct``/``path`` (NIfTI or DICOM folder), ``labels``/``truth_labels`` (ground truth),
optional ``coarse``/``coarse_labels`` (for the automatic pipeline). Writes interactive.csv, noc.csv,
automatic.csv, summary.json and curve.png; prints the summary.
"""

from __future__ import annotations

import argparse
import sys

HELP = "evaluate a model: Dice vs simulated clicks, NoC@85/90, automatic pipeline vs coarse labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="TSV of test cases (ct, labels[, coarse])")
    parser.add_argument("--checkpoint", required=True, help="model: .safetensors, params.pth or builtin:NAME")
    parser.add_argument("-o", "--output", required=True, help="evaluation folder")
    parser.add_argument("--clicks", type=int, default=10, help="clicks of the interactive protocol (default 10)")
    parser.add_argument("--ct-column", default=None)
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--coarse-column", default=None, help="coarse-label column (default: coarse or coarse_labels)")
    parser.add_argument("--no-automatic", action="store_true", help="skip the seed -> refine pipeline")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--cache-dir", default=None, help="model-frame cache (default OUTPUT/cache)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctsam.config import load_config
    from ctsam.errors import CheckpointError
    from ctsam.model import load_model, resolve_device
    from ctsam.training.data import read_table
    from ctsam.training.evaluate import EvalSettings, evaluate, format_summary

    config = load_config(args.config)
    loaded = load_model(args.checkpoint, device=resolve_device(args.device))
    if loaded.family != "ctsam3d":
        raise CheckpointError(
            "evaluate scores anatomy refinement models (family ctsam3d)",
            path=args.checkpoint,
            found=f"a {loaded.family} model",
            fix="pass a CT-SAM3D checkpoint",
        )
    model = loaded.module
    rows = read_table(
        args.data, ct_column=args.ct_column, label_column=args.label_column, coarse_column=args.coarse_column
    )
    out = Path(args.output)
    summary = evaluate(
        model,
        rows,
        out,
        config=config,
        settings=EvalSettings(n_clicks=args.clicks),
        cache_dir=Path(args.cache_dir) if args.cache_dir else out / "cache",
        automatic=not args.no_automatic,
    )
    sys.stdout.write(format_summary(summary) + "\n")
    return 1 if summary["failed"] and len(summary["failed"]) == summary["cases"] else 0
