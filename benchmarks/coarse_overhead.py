"""Overhead of ``ctsam coarse --backend totalsegmentator`` over calling the TotalSegmentator CLI directly.

Both run the same TotalSegmentator command (``-ml -f -d cpu -nr 1 -ns 1 --report -q``) on the same
CT with the same weights, each in a fresh, pre-seeded ``TOTALSEG_HOME_DIR``, in ABBA order to
cancel drift from other load on the machine. ctsam adds: its own start-up, the weights preflight,
reading the CT header, hashing the CT, relabelling by name, writing the label map, the ``.tsv``
and the JSON sidecar.

Default weights: the tiny random-weight fixture model (built in a temporary folder), so the
TotalSegmentator part is short and the ratio is a pessimistic bound for real models.

    python benchmarks/coarse_overhead.py [--ct CT.nii.gz] [--weights ROOT] [--pairs 2]

Goal: overhead <= 5 %. Three figures are printed: wall-clock medians (noisy when the machine is
shared), CPU time of the whole process tree (robust to other load), and ctsam's own wall time
outside the TotalSegmentator subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _default_ct() -> Path:
    data = Path(os.environ.get("CTSAM_TEST_DATA", REPO.parent / "shared" / "data"))
    for candidate in (data, Path("/work/shared/data")):
        ct = candidate / "totalseg_examples" / "example_ct_sm.nii.gz"
        if ct.exists():
            return ct
    raise SystemExit("example_ct_sm.nii.gz not found: pass --ct or set CTSAM_TEST_DATA")


def _direct(ct: Path, weights: Path, work: Path) -> float:
    from ctsam.coarse.totalseg import SEEDED_CONFIG, TsOptions, build_command, resolve_executable

    home, tmp = work / "home", work / "tmp"
    home.mkdir(parents=True)
    tmp.mkdir()
    (home / "config.json").write_text(json.dumps(SEEDED_CONFIG))
    opts = TsOptions(mode="fast", device="cpu")
    cmd = build_command(resolve_executable("TotalSegmentator"), ct, work / "seg.nii.gz", work / "report.json", opts)
    env = dict(os.environ, TOTALSEG_HOME_DIR=str(home), TOTALSEG_WEIGHTS_PATH=str(weights), TMPDIR=str(tmp))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    return time.perf_counter() - t0


_OWN: list[float] = []  # ctsam's own time per run: process wall time minus the TotalSegmentator subprocess


def _ctsam(ct: Path, weights: Path, work: Path) -> float:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "ctsam",
        "coarse",
        str(ct),
        "-o",
        str(work / "coarse.nii.gz"),
        "--backend",
        "totalsegmentator",
        "--fast",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--weights",
        str(weights),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=work
    )
    wall = time.perf_counter() - t0
    m = re.search(r"TotalSegmentator finished in ([0-9.]+) s", proc.stderr)
    if m:
        _OWN.append(wall - float(m.group(1)))
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", type=Path, default=None)
    ap.add_argument("--weights", type=Path, default=None, help="weights root (default: build the fixture model)")
    ap.add_argument("--pairs", type=int, default=2, help="ABBA pairs (each pair = 2 direct + 2 ctsam runs)")
    args = ap.parse_args()
    ct = (args.ct or _default_ct()).resolve()
    with tempfile.TemporaryDirectory(prefix="coarse_overhead_") as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            from ctsam.coarse.fixture_model import build_fixture_weights

            weights = build_fixture_weights(tmp / "weights", (297,))
        times: dict[str, list[float]] = {"direct": [], "ctsam": []}
        cpu: dict[str, list[float]] = {"direct": [], "ctsam": []}
        run = {"direct": _direct, "ctsam": _ctsam}
        n = 0
        # one warm-up of each (page cache, .pyc), not counted
        for name in ("direct", "ctsam"):
            n += 1
            run[name](ct, weights, tmp / f"run{n}")
        _OWN.clear()
        for _ in range(args.pairs):
            for name in ("direct", "ctsam", "ctsam", "direct"):
                n += 1
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                times[name].append(run[name](ct, weights, tmp / f"run{n}"))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    d, c = statistics.median(times["direct"]), statistics.median(times["ctsam"])
    print(f"CT: {ct.name}; weights: {'fixture (random, 3 mm)' if args.weights is None else weights}")
    print(f"TotalSegmentator CLI direct : median {d:7.2f} s  runs {['%.2f' % t for t in times['direct']]}")
    print(f"ctsam coarse (wrapper)      : median {c:7.2f} s  runs {['%.2f' % t for t in times['ctsam']]}")
    print(f"overhead (median ctsam - median direct): {c - d:+.2f} s = {100 * (c - d) / d:+.1f} %  (goal <= 5 %)")
    cd, cc = statistics.median(cpu["direct"]), statistics.median(cpu["ctsam"])
    print(
        f"CPU time (user+sys, whole process tree; robust to other load): direct {cd:.2f} s, "
        f"ctsam {cc:.2f} s, overhead {cc - cd:+.2f} s = {100 * (cc - cd) / cd:+.1f} %"
    )
    if _OWN:
        own = statistics.median(_OWN)
        print(
            f"ctsam's own time outside the TotalSegmentator subprocess: median {own:.2f} s "
            f"= {100 * own / d:.1f} % of the direct run  runs {['%.2f' % t for t in _OWN]}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings are noisy under load)")


if __name__ == "__main__":
    main()
