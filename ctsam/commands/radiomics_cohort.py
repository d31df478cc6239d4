"""``ctsam radiomics-cohort``: many cases' long feature tables -> one wide cohort table."""

from __future__ import annotations

HELP = "combine per-case radiomics tables into one wide table (one row per case x structure)"


def add_arguments(parser) -> None:
    parser.add_argument("features", nargs="+", help="FEATURES.parquet files written by 'ctsam radiomics'")
    parser.add_argument("-o", "--output", required=True, help="output COHORT.parquet")
    parser.add_argument("--csv", action="store_true", help="also write COHORT.csv beside it")


def run(args) -> int:
    import logging

    from ctsam.radiomics.table import cohort_table, write_cohort

    df, meta = cohort_table(args.features)
    written = write_cohort(args.output, df, meta, csv=args.csv)
    logging.getLogger("ctsam.radiomics").info(
        "%d case(s), %d rows, %d feature columns (%s) -> %s", meta["n_cases"], len(df),
        df.shape[1] - 6, ", ".join(f"{n} {s}" for s, n in meta["counts"].items()), ", ".join(map(str, written)))
    return 0
