"""``ctsam radiomics-cohort``: many cases' long feature tables -> one wide cohort table."""

from __future__ import annotations

HELP = "combine per-case radiomics tables into one wide table (one row per case x structure)"


def add_arguments(parser) -> None:
    parser.add_argument("features", nargs="+", help="FEATURES.parquet files written by 'ctsam radiomics'")
    parser.add_argument("-o", "--output", required=True, help="output COHORT.parquet")
    parser.add_argument("--csv", action="store_true", help="also write COHORT.csv beside it")


def run(args) -> int:
    from ctsam.api import radiomics_cohort

    radiomics_cohort(args.features, args.output, csv=args.csv)
    return 0
