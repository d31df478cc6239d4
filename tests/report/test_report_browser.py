"""The report in a real headless browser (Debian's chromium, DevTools protocol over a pipe): every
image decodes, nothing is written to the console. Skips when no Chromium is installed."""

from __future__ import annotations

import pytest

from ctsam.report.browser import find_chromium, inspect_page
from ctsam.report.build import build_report

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium binary (Debian: apt-get install chromium; .ci/run installs it as root)"
)


def test_report_opens_without_broken_images_or_console_errors(results_with_failure):
    out = results_with_failure / "cohort" / "report.html"
    build_report(results_with_failure, out)
    page = inspect_page(out)
    assert page.title == "ctsam cohort QC report"
    assert len(page.images) == 2 and all(i["width"] > 300 for i in page.images)  # one snapshot per case
    assert page.problems == []
    assert page.screenshot_png.startswith(b"\x89PNG")


def test_broken_image_and_console_error_are_caught(results_with_failure, tmp_path):
    """The same check on a spoiled copy: it must see what it is there to see."""
    out = results_with_failure / "cohort" / "report.html"
    build_report(results_with_failure, out)
    spoiled = tmp_path / "spoiled.html"
    spoiled.write_text(
        out.read_text().replace(
            "</main>", "<img alt='bad' src='data:image/png;base64,AAAA'><script>console.error('boom')</script></main>"
        )
    )
    page = inspect_page(spoiled)
    assert "broken image: bad" in page.problems and "console error: boom" in page.problems
