"""``ctsam demo-cohort DIR --cases N``: write a synthetic demo cohort (DICOM phantoms + labels)."""

from __future__ import annotations

import argparse

HELP = "write a synthetic whole-body CT demo cohort (DICOM series, ground truth, coarse labels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="cohort folder to write (one subfolder per case, plus samples.tsv)")
    parser.add_argument("--cases", type=int, default=3, help="number of cases (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed; case k is drawn from (seed, k) (default 0)")
    parser.add_argument(
        "--corrupt-case",
        action="store_true",
        help="drop two slices from the last case's DICOM series so converting it fails",
    )
    parser.add_argument(
        "--defects",
        action="store_true",
        help="add one case per planted QC defect (missing organ, swapped side, truncated field of view, "
        "leaking mask; ctsam/demo/defects.py), truth in each phantom.json",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="CASE_ID",
        help="write only this case of the cohort (repeatable); samples.tsv is not written",
    )


def run(args: argparse.Namespace) -> int:
    from ctsam.api import demo_cohort

    demo_cohort(
        args.dir, cases=args.cases, seed=args.seed, corrupt_case=args.corrupt_case, only=args.only, defects=args.defects
    )
    return 0
