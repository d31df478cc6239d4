"""Cohort outputs from the cases that completed, for a run in which some cases failed.

The workflow's cohort rules (``report``, ``radiomics_cohort``) need every case, so with ``--keep-going``
a single failed case leaves the cohort without a report. The workflow's ``onerror`` hook calls
:func:`write_completed_outputs` after writing ``failures.tsv``: the report and its QC table cover the
cases with a ``qc.json``, the radiomics cohort table the cases with a ``radiomics.parquet``, and the
report lists the failed cases with their reasons. Once the failed cases are fixed, the next run's
rules rebuild these files from every case (their inputs are newer).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ctsam.errors import CtsamError

log = logging.getLogger(__name__)


def write_completed_outputs(
    results_dir: str | os.PathLike[str], case_ids: list[str], *, report: bool, radiomics: bool
) -> dict[str, str]:
    """Write ``<results>/cohort/report.html`` (+ ``report_qc.parquet/.csv``) and ``radiomics.parquet``
    from the listed cases that completed those stages; return ``{output: path}`` of what was written.

    Errors are logged, never raised: this runs in a hook after a failed run, and must not hide the
    original failure.
    """
    results = Path(results_dir)
    cohort = results / "cohort"
    written: dict[str, str] = {}
    if report:
        try:
            from ctsam.report.build import build_report

            summary = build_report(results, cohort / "report.html")
            written["report"] = summary["html"]
            log.warning(
                "cohort report of the %d completed case(s) (%d failed, listed in it): %s",
                summary["cases"],
                summary["failed"],
                summary["html"],
            )
        except (CtsamError, OSError, ValueError) as err:
            log.error("no cohort report for the completed cases: %s", str(err).splitlines()[0] if str(err) else err)
    if radiomics:
        tables: list[str | os.PathLike[str]] = [
            p for p in (results / c / "radiomics.parquet" for c in case_ids) if p.is_file()
        ]
        if tables:
            try:
                from ctsam.radiomics.table import cohort_table, write_cohort

                df, meta = cohort_table(tables)
                write_cohort(cohort / "radiomics.parquet", df, meta)
                written["radiomics"] = str(cohort / "radiomics.parquet")
                log.warning("radiomics cohort table of the %d completed case(s): %s", len(tables), written["radiomics"])
            except (CtsamError, OSError, ValueError, ImportError) as err:
                log.error("no radiomics cohort table for the completed cases: %s", err)
    return written
