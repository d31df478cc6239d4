"""``ctsam cohort-status RESULTS``: which cases finished, and the one-line reason for each failure."""

from __future__ import annotations

import argparse

HELP = "write RESULTS/cohort/status.tsv and failures.tsv: per case ok / failed (stage, reason) / incomplete"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="the workflow's results folder (one sub-folder per case)")
    parser.add_argument(
        "--stages",
        default=None,
        help="comma-separated per-case stages to check (default: from --config's workflow.stages)",
    )
    parser.add_argument(
        "--all-cases",
        action="store_true",
        help="check the case sub-folders found in RESULTS instead of the cohort named by --config",
    )
    parser.add_argument("-o", "--out-dir", default=None, help="where to write the tables (default RESULTS/cohort)")


def run(args: argparse.Namespace) -> int:
    from ctsam.cohort import (
        STAGE_FILES,
        available_commands,
        load_samples,
        resolve_stages,
        scan_results_samples,
        write_status_tables,
    )
    from ctsam.config import load_config

    wf = load_config(args.config)["workflow"]
    if args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    else:
        stages = resolve_stages(wf["stages"], available_commands())
    samples = scan_results_samples(args.results) if args.all_cases else load_samples(wf)
    # the tables are the result: failed cases are not an error of this command
    write_status_tables(args.results, samples, [s for s in stages if s in STAGE_FILES], cohort_dir=args.out_dir)
    return 0
