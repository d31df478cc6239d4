"""``ctsam fuse``: coarse label map + refined probabilities -> one 107-structure label map."""

from __future__ import annotations

import argparse

HELP = "fuse the coarse label map and refined probabilities into one 107-structure label map"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("coarse", metavar="COARSE.nii.gz", help="coarse label map (TotalSegmentator 'total' ids/names)")
    parser.add_argument(
        "refined",
        metavar="REFINED.npz",
        nargs="?",
        default=None,
        help="refined probabilities from 'ctsam refine' (omit when the model was not used: coarse masks only)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="LABELS.nii.gz", help="fused label map (+ .tsv label table)")
    parser.add_argument("--sidecar", default=None, metavar="FUSE.json", help="per-structure sources and rules (JSON)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctsam.config import load_config
    from ctsam.fuse.fusion import default_vocabulary, fuse
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_labelmap, write_labelmap
    from ctsam.refine.refined_file import load_refined

    config = load_config(args.config)["fuse"]
    coarse = read_labelmap(args.coarse, case=args.case)
    refined = load_refined(args.refined, case=args.case) if args.refined else None
    vocabulary = default_vocabulary(keep_unmapped=bool(config["keep_unmapped_coarse"]))
    result = fuse(coarse, refined, vocabulary, config, case=args.case)
    del coarse, refined
    write_labelmap(args.output, result.labelmap)
    if args.sidecar:
        inputs = {"coarse": Path(args.coarse).name, "refined": Path(args.refined).name if args.refined else None}
        atomic_write_json(args.sidecar, result.sidecar(config=config, case=args.case, inputs=inputs))
    return 0
