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
    parser.add_argument(
        "-o", "--output", required=True, metavar="LABELS.nii.gz", help="fused label map (+ .tsv label table)"
    )
    parser.add_argument("--sidecar", default=None, metavar="FUSE.json", help="per-structure sources and rules (JSON)")


def run(args: argparse.Namespace) -> int:
    from ctsam.api import fuse_file

    fuse_file(args.coarse, args.refined, args.output, sidecar=args.sidecar, config=args.config, case=args.case)
    return 0
