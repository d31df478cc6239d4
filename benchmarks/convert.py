"""Benchmark: ``ctsam convert`` against dcm2niix (``-z y``) on the same series, in one run.

Studies: ``elastix_thorax141`` (real Philips thorax, 512x512x141, uncompressed) and a synthetic
512x512x600 study written by this script (an abdomen-like phantom: air, body, lungs, bone, noise;
12-bit stored values, RescaleIntercept -1024; pass ``--synthetic-slices`` to change its size).
Both tools run as child processes, interleaved, ``--repeats`` times, each writing ``.nii.gz`` into
a fresh temporary folder. Wall time is measured around each child; peak memory is the child's own
maximum resident set size (``os.wait4`` rusage); file size is the output's. Ratios are ctsam /
dcm2niix (medians of wall times, max of RSS). Goals (issue 19): wall <= 0.7x, file <= 1.0x,
peak RSS <= 1.2x.

Usage::

    python benchmarks/convert.py [--data ../shared/data] [--repeats 3] [--synthetic-slices 600]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOALS = {"wall": 0.7, "file": 1.0, "rss": 1.2}


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in MiB, CPU seconds user+system). Raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime  # ru_maxrss: KiB on Linux


def dcm2niix_binary() -> str:
    try:
        import dcm2niix  # the PyPI wheel ships the binary beside its __init__
    except ImportError:
        sys.exit("dcm2niix is not installed (pip install dcm2niix, part of ctsam[dev])")
    return str(Path(dcm2niix.__file__).parent / "dcm2niix")


def write_synthetic_study(folder: Path, n_slices: int, size: int = 512) -> None:
    """An abdomen-like phantom series: 12-bit stored values, 0.8 mm pixels, 1.25 mm slices."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    study, series, frame = (f"1.2.826.0.1.3680043.8.498.{900 + i}" for i in range(3))
    sop_root = "1.2.826.0.1.3680043.8.498.903."
    for k in range(n_slices):
        t = k / max(1, n_slices - 1)
        body = (xx / (0.42 - 0.05 * t)) ** 2 + (yy / 0.32) ** 2 < 1
        lungs = ((np.abs(xx) - 0.17) / 0.12) ** 2 + ((yy + 0.02) / (0.18 * (1 - 0.9 * t))) ** 2 < 1
        spine = (xx / 0.05) ** 2 + ((yy - 0.2) / 0.05) ** 2 < 1
        hu = np.full((size, size), -1000.0, np.float32)
        hu[body] = 40.0
        hu[lungs & body] = -850.0
        hu[spine] = 700.0
        hu += rng.normal(0.0, 12.0, hu.shape).astype(np.float32) * body
        stored = np.clip(np.rint(hu + 1024), 0, 4095).astype("<u2")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = sop_root + str(k + 1)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber, ds.InstanceNumber, ds.ConvolutionKernel = 2, k + 1, "STANDARD"
        ds.ImagePositionPatient = [-204.8, -204.8, -1.25 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 1.25
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)


def bench_study(name: str, study: Path, repeats: int, binary: str, env: dict[str, str]) -> dict[str, float]:
    tools = {
        "ctsam convert": lambda out: (
            [sys.executable, "-m", "ctsam", "convert", "-q", str(study), "-o", str(out / "ct.nii.gz")],
            out / "ct.nii.gz",
        ),
        "dcm2niix -z y": lambda out: (
            [binary, "-z", "y", "-b", "n", "-o", str(out), "-f", "ct", str(study)],
            out / "ct.nii.gz",
        ),
    }
    walls: dict[str, list[float]] = {t: [] for t in tools}
    rss: dict[str, list[float]] = {t: [] for t in tools}
    cpu: dict[str, list[float]] = {t: [] for t in tools}
    size: dict[str, int] = {}
    n_files = sum(1 for p in study.rglob("*") if p.is_file())
    print(f"\n== {name}: {study} ({n_files} files), {repeats} interleaved repeats")
    for rep in range(repeats):
        for tool, make in tools.items():
            out = Path(tempfile.mkdtemp(prefix="ctsam-bench-"))
            try:
                cmd, result = make(out)
                wall, peak, cpu_s = run_child(cmd, env=env)
                walls[tool].append(wall)
                rss[tool].append(peak)
                cpu[tool].append(cpu_s)
                size[tool] = result.stat().st_size
            finally:
                shutil.rmtree(out, ignore_errors=True)
            print(
                f"  repeat {rep + 1}: {tool:16s} {wall:6.2f} s wall {cpu_s:6.2f} s CPU {peak:7.1f} MiB "
                f"{size[tool] / 1e6:7.2f} MB"
            )
    ours, base = "ctsam convert", "dcm2niix -z y"
    ratios = {
        "wall": statistics.median(walls[ours]) / statistics.median(walls[base]),
        "file": size[ours] / size[base],
        "rss": max(rss[ours]) / max(rss[base]),
    }
    print(f"  {'tool':16s} {'median s':>9s} {'min s':>7s} {'CPU s':>7s} {'peak MiB':>9s} {'file MB':>8s}")
    for tool in tools:
        print(
            f"  {tool:16s} {statistics.median(walls[tool]):9.2f} {min(walls[tool]):7.2f} "
            f"{statistics.median(cpu[tool]):7.2f} {max(rss[tool]):9.1f} {size[tool] / 1e6:8.2f}"
        )
    print(
        "  ratio ctsam / dcm2niix: "
        + ", ".join(
            f"{k} {v:.2f}x (goal <= {GOALS[k]}x: {'met' if v <= GOALS[k] else 'MISSED'})" for k, v in ratios.items()
        )
    )
    ratios["cpu"] = statistics.median(cpu[ours]) / statistics.median(cpu[base])
    print(f"  (CPU seconds ratio, user+system of all threads: {ratios['cpu']:.2f}x; no goal, shown for context)")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CTSAM_TEST_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--study", default="elastix_thorax141")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic-slices", type=int, default=600, help="0 skips the synthetic study")
    args = parser.parse_args()
    binary = dcm2niix_binary()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"{os.cpu_count()} CPUs visible; load average {os.getloadavg()[0]:.1f} at start")
    results = {}
    study = Path(args.data) / args.study
    if study.is_dir():
        results[args.study] = bench_study(args.study, study, args.repeats, binary, env)
    else:
        print(f"study folder not found: {study} (pass --data or set CTSAM_TEST_DATA); skipped")
    if args.synthetic_slices:
        with tempfile.TemporaryDirectory(prefix="ctsam-bench-synthetic-") as tmp:
            t0 = time.perf_counter()
            folder = Path(tmp) / "study"
            write_synthetic_study(folder, args.synthetic_slices)
            print(f"\n(wrote the synthetic 512x512x{args.synthetic_slices} study in {time.perf_counter() - t0:.0f} s)")
            name = f"synthetic 512x512x{args.synthetic_slices}"
            results[name] = bench_study(name, folder, args.repeats, binary, env)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (the machine is shared: wall ratios vary with load)")
    for name, r in results.items():
        print(
            f"{name:28s} wall {r['wall']:.2f}x  file {r['file']:.3f}x  peak RSS {r['rss']:.2f}x  (CPU {r['cpu']:.2f}x)"
        )


if __name__ == "__main__":
    main()
