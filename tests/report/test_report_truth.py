"""The report tells the truth: failed cases from failures.tsv, 'coarse' for never-refined structures,
the flagged structure outlined, and a report of the completed cases after a failed run."""

from __future__ import annotations

import re

import numpy as np

from ctsam.report.build import build_report
from tests.report.conftest import write_case


def test_failures_tsv_is_found_and_stale_entries_dropped(results_with_failure):
    out = results_with_failure / "cohort" / "report.html"
    summary = build_report(results_with_failure, out)
    html = out.read_text()
    failed = html[html.index("id='failed'") :]
    assert summary["failed"] == 1 and "case-c" in failed and "2 slices missing" in failed
    assert "stale entry" not in failed  # case-a has a qc.json: it completed after all
    assert "no failure list" not in html and "results/cohort/failures.tsv" in failed
    assert str(results_with_failure) not in html  # no absolute paths


def test_no_failure_list_says_so(tmp_path):
    results = tmp_path / "results"
    write_case(results, "case-a")
    html_path = tmp_path / "r.html"
    build_report(results, html_path)
    assert "no failure list found" in html_path.read_text()


def test_never_refined_structures_say_coarse(results_with_failure):
    out = results_with_failure / "cohort" / "report.html"
    build_report(results_with_failure, out)
    html = out.read_text()
    row = re.search(r"<tr><td>esophagus</td>.*?</tr>", html).group(0)
    assert ">coarse<" in row and "1.000" not in row
    liver = re.search(r"<tr><td>liver</td>.*?</tr>", html).group(0)
    assert "1.000" in liver  # refined (and here identical to coarse): a measured agreement


def test_flagged_structure_is_outlined():
    from ctsam.report.snapshots import OUTLINE_COLOR, render_snapshot
    from ctsam.volume import Geometry

    g = Geometry((12, 20, 20), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    lab = np.zeros(g.shape_zyx, np.uint8)
    lab[3:9, 5:12, 5:12] = 1
    ct = np.zeros(g.shape_zyx, np.int16)

    def yellow_pixels(png: bytes) -> int:
        import io

        import matplotlib.image as mpimg

        img = mpimg.imread(io.BytesIO(png))[..., :3]
        target = np.array([int(OUTLINE_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        return int((np.abs(img - target).max(axis=-1) < 0.08).sum())

    plain = render_snapshot(ct, lab, g, {1: "liver"})
    outlined = render_snapshot(ct, lab, g, {1: "liver"}, outline_label=1)
    assert yellow_pixels(plain) == 0 and yellow_pixels(outlined) > 100


def test_completed_outputs_after_a_failed_run(results_with_failure):
    from ctsam.cohort_outputs import write_completed_outputs

    written = write_completed_outputs(results_with_failure, ["case-a", "case-b", "case-c"], report=True, radiomics=True)
    assert set(written) == {"report"}  # no case has radiomics: no table, no error
    html = (results_with_failure / "cohort" / "report.html").read_text()
    assert "id='case-case-b'" in html and "case-c" in html[html.index("id='failed'") :]
    assert (results_with_failure / "cohort" / "report_qc.parquet").exists()
