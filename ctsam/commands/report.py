"""``ctsam report``: a self-contained HTML cohort QC report plus the cohort table (parquet + CSV)."""

from __future__ import annotations

import argparse

HELP = "cohort QC report (self-contained HTML) and table (parquet + CSV) from results/<case>/qc.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS_DIR", help="folder holding one sub-folder per case with qc.json")
    parser.add_argument(
        "-o", "--output", required=True, metavar="report.html", help="HTML report; the table is written beside it"
    )
    parser.add_argument("--table-stem", default=None, help="file stem of the cohort table (default: <report>_qc)")
    parser.add_argument(
        "--failures",
        default="auto",
        metavar="FILE",
        help="failure list (TSV/CSV with a 'case' column, or one case per line); default: "
        "RESULTS_DIR/cohort/failures.tsv when it exists; 'none' to list none",
    )
    parser.add_argument(
        "--max-snapshots",
        type=int,
        default=50,
        help="overlay snapshots for at most this many cases, most severe first (default 50)",
    )
    parser.add_argument(
        "--ct-glob", default=None, help="glob (in the case folder) of the CT for snapshots (default: qc.json inputs.ct)"
    )
    parser.add_argument(
        "--labels-glob", default=None, help="glob of the label map for snapshots (default: qc.json inputs.labels)"
    )
    parser.add_argument("--qc-name", default="qc.json", help="QC file name inside each case folder (default qc.json)")


def run(args: argparse.Namespace) -> int:
    from ctsam.api import cohort_report

    cohort_report(
        args.results,
        args.output,
        table_stem=args.table_stem,
        failures=None if str(args.failures).lower() == "none" else args.failures,
        max_snapshots=args.max_snapshots,
        ct_pattern=args.ct_glob,
        labels_pattern=args.labels_glob,
        qc_name=args.qc_name,
    )
    return 0
