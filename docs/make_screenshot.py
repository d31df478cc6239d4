"""Regenerate docs/report.png: a screenshot of a cohort report in headless Chromium.

    python docs/make_screenshot.py [REPORT.html] [-o docs/report.png]

Without REPORT.html it runs the demo workflow (3 cases, the default config) in a temporary folder and
shoots its results/cohort/report.html. Needs Chromium (Debian: apt-get install chromium) and refuses
to write a screenshot of a page with broken images or console errors.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_report(workdir: Path) -> Path:
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    cfg = workdir / "config.yaml"
    cfg.write_text("{}\n")
    subprocess.run([sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/local", "--directory", str(workdir),
                    "--configfile", str(cfg)], cwd=REPO, env=env, check=True)
    return workdir / "results" / "cohort" / "report.html"


def main() -> int:
    from ctsam.io.atomic import atomic_path
    from ctsam.report.browser import inspect_page

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", nargs="?", type=Path, help="report.html (default: run the demo workflow first)")
    ap.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "report.png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    args = ap.parse_args()
    report = args.report or demo_report(Path(tempfile.mkdtemp(prefix="ctsam-screenshot-")))
    page = inspect_page(report, width=args.width, height=args.height)
    if page.problems:
        print("not written: the page has problems:\n  " + "\n  ".join(page.problems), file=sys.stderr)
        return 1
    with atomic_path(args.output) as tmp:
        Path(tmp).write_bytes(page.screenshot_png)
    print(f"{args.output}: {args.width}x{args.height} screenshot of {report.name} ({len(page.images)} images, no problems)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
