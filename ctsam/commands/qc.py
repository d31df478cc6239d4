"""``ctsam qc``: per-structure QC metrics and flags of a fused label map."""

from __future__ import annotations

import argparse

HELP = "per-structure QC of a label map: volumes, components, coarse-vs-final agreement, HU, laterality, flags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", metavar="CT.nii.gz", help="the CT (HU)")
    parser.add_argument("labels", metavar="LABELS.nii.gz", help="the fused label map")
    parser.add_argument(
        "--coarse", default=None, metavar="COARSE.nii.gz", help="coarse label map (reference for Dice/HD95/NSD)"
    )
    parser.add_argument(
        "--refined", default=None, metavar="REFINED.npz", help="refined probabilities (model confidence)"
    )
    parser.add_argument(
        "--fuse-sidecar", default=None, metavar="FUSE.json", help="fusion sidecar (records each structure's source)"
    )
    parser.add_argument(
        "--lesions",
        default=None,
        metavar="LESIONS.nii.gz",
        help="lesion map from 'ctsam lesions' (its LESIONS.json beside it): one QC row per lesion",
    )
    parser.add_argument("-o", "--output", required=True, metavar="QC.json", help="QC document (JSON)")


def run(args: argparse.Namespace) -> int:
    from ctsam.api import qc_file

    qc_file(
        args.ct,
        args.labels,
        args.output,
        coarse_labels=args.coarse,
        refined=args.refined,
        fuse_sidecar=args.fuse_sidecar,
        lesions=args.lesions,
        config=args.config,
        case=args.case,
    )
    return 0
