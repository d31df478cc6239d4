"""Benchmark: ``ctsam convert`` against dcm2niix on one DICOM series (default: elastix_thorax141).

Both run as child processes, interleaved, ``--repeats`` times, each writing ``.nii.gz`` into a fresh
temporary folder. Wall time is measured around each child; peak memory is the child's own maximum
resident set size (``os.wait4`` rusage). gzip levels: ctsam writes level 1; dcm2niix's default is
level 6 (``-z y``), and it is also run with ``-1`` (level 1) for a like-for-like comparison.

Usage::

    python benchmarks/convert.py [--data ../shared/data] [--study elastix_thorax141] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in MiB). Raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0  # Linux: KiB


def dcm2niix_binary() -> str:
    try:
        import dcm2niix  # the PyPI wheel ships the binary beside its __init__
    except ImportError:
        sys.exit("dcm2niix is not installed (pip install dcm2niix, part of ctsam[dev])")
    return str(Path(dcm2niix.__file__).parent / "dcm2niix")


def ctsam_phases(study: Path, env: dict[str, str]) -> str:
    """Run ctsam once at INFO level and return its phase timings (the rest of the wall time is start-up)."""
    with tempfile.TemporaryDirectory(prefix="ctsam-bench-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "ctsam", "convert", str(study), "-o", str(Path(tmp) / "ct.nii.gz")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        wall = time.perf_counter() - t0
    match = re.search(r"\(scan\+select ([\d.]+) s, decode ([\d.]+) s, write ([\d.]+) s\)", proc.stderr)
    if not match:
        return "(phase line not found)"
    scan, decode, write = (float(v) for v in match.groups())
    startup = wall - scan - decode - write
    return (
        f"wall {wall:.2f} s = start-up/imports {startup:.2f} + scan headers & select {scan:.2f} "
        f"+ decode & HU {decode:.2f} + write .nii.gz {write:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CTSAM_TEST_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--study", default="elastix_thorax141")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    study = Path(args.data) / args.study
    if not study.is_dir():
        sys.exit(f"study folder not found: {study} (pass --data or set CTSAM_TEST_DATA)")
    binary = dcm2niix_binary()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    tools = {
        "ctsam convert (gzip 1)": lambda out: (
            [sys.executable, "-m", "ctsam", "convert", "-q", str(study), "-o", str(out / "ct.nii.gz")],
            out / "ct.nii.gz",
        ),
        "dcm2niix -z y (gzip 6, default)": lambda out: (
            [binary, "-z", "y", "-b", "n", "-o", str(out), "-f", "ct", str(study)],
            out / "ct.nii.gz",
        ),
        "dcm2niix -z y -1 (gzip 1)": lambda out: (
            [binary, "-z", "y", "-1", "-b", "n", "-o", str(out), "-f", "ct", str(study)],
            out / "ct.nii.gz",
        ),
    }
    walls: dict[str, list[float]] = {name: [] for name in tools}
    rss: dict[str, list[float]] = {name: [] for name in tools}
    size: dict[str, int] = {}
    n_files = sum(1 for p in study.rglob("*") if p.is_file())
    print(f"study: {study} ({n_files} files), {args.repeats} interleaved repeats, {os.cpu_count()} CPUs visible")
    for rep in range(args.repeats):
        for name, make in tools.items():
            out = Path(tempfile.mkdtemp(prefix="ctsam-bench-"))
            try:
                cmd, result = make(out)
                wall, peak = run_child(cmd, env=env)
                walls[name].append(wall)
                rss[name].append(peak)
                size[name] = result.stat().st_size
            finally:
                shutil.rmtree(out, ignore_errors=True)
            print(f"  repeat {rep + 1}: {name:34s} {wall:6.2f} s  {peak:7.1f} MiB")
    print()
    print(f"{'tool':34s} {'median s':>9s} {'min s':>7s} {'peak MiB':>9s} {'output MB':>10s}")
    for name in tools:
        print(
            f"{name:34s} {statistics.median(walls[name]):9.2f} {min(walls[name]):7.2f} "
            f"{max(rss[name]):9.1f} {size[name] / 1e6:10.1f}"
        )
    ours = "ctsam convert (gzip 1)"
    print()
    print("ctsam phases (one more run, from its INFO log):", ctsam_phases(study, env))
    print()
    for base in list(tools)[1:]:
        print(
            f"ratio ctsam / {base}: wall {statistics.median(walls[ours]) / statistics.median(walls[base]):.2f}x "
            f"(goal <= 1.5x), peak memory {max(rss[ours]) / max(rss[base]):.2f}x"
        )


if __name__ == "__main__":
    main()
