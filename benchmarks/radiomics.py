"""Benchmark: ctsam radiomics vs TotalSegmentator's way (sequential pyradiomics over whole-volume masks).

Case: TotalSegmentator's example CT (122x101x112, 3 mm) with its 61-structure ``--fast --ml -fs``
label map. Settings: TotalSegmentator's ``--radiomics`` (shape + firstorder, resampledPixelSpacing
[3,3,3], geometryTolerance 1e-3; ctsam's shipped ``totalseg`` parameter file).

* baseline: what ``totalsegmentator.statistics.get_radiomics_features_for_entire_dir`` does -- one
  binary whole-volume mask file per structure (written before timing starts; TotalSegmentator has
  them as its per-class output) and, sequentially, ``RadiomicsFeatureExtractor(...).execute(ct_file,
  mask_file)`` per structure, in this process (ITK multi-threaded as the user would get it).
  ``--baseline memory`` instead passes whole-volume SimpleITK images already in memory (no file
  reads; a stricter baseline than TotalSegmentator itself).
* ctsam: ``extract_case`` (reads the CT and label map, bounding-box crops, N worker processes).

Runs alternate (baseline, ctsam for each N) ``--repeats`` times; the best time of each is used.
Wall time and CPU time (this process + worker processes) are both reported, with the load average:
on a shared machine wall times are noisy, and Linux's autogroup scheduler gives a busy machine's
sessions equal CPU shares, so extra worker processes only shorten wall time when cores are free.

    PYTHONPATH=. python benchmarks/radiomics.py [--workers 1 2] [--repeats 1] [--baseline files|memory]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# this file is named like the pyradiomics package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))


def _default_data() -> Path:
    return Path(os.environ.get("CTSAM_TEST_DATA", REPO.parent / "shared" / "data")) / "totalseg_examples"


#: whole-volume mask images for ``--baseline memory`` (read before timing starts)
_MASK_CACHE: dict = {}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system), in seconds."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def write_masks(labels_path: Path, names: dict[int, str], out_dir: Path) -> dict[str, Path]:
    """One binary whole-volume mask file per present structure (TotalSegmentator's per-class output)."""
    import numpy as np
    import SimpleITK as sitk

    labels = sitk.ReadImage(str(labels_path))
    arr = sitk.GetArrayViewFromImage(labels)
    out = {}
    for label in sorted(int(v) for v in np.unique(arr) if v != 0):
        name = names.get(label, f"label_{label}")
        mask = sitk.GetImageFromArray((arr == label).astype(np.uint8))
        mask.CopyInformation(labels)
        out[name] = out_dir / f"{name}.nii.gz"
        sitk.WriteImage(mask, str(out[name]))
    return out


def baseline(ct_path: Path, masks: dict[str, Path], params_path: Path, mode: str) -> tuple[dict, float]:
    """Sequential pyradiomics over whole-volume masks. Returns ({structure: {feature: value}}, seconds)."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    from ctsam.radiomics.params import tame_pyradiomics_logging

    tame_pyradiomics_logging()
    t0 = time.perf_counter()
    ct = sitk.ReadImage(str(ct_path)) if mode == "memory" else None
    results: dict[str, dict | str] = {}
    for name, mask_path in sorted(masks.items()):
        extractor = featureextractor.RadiomicsFeatureExtractor(str(params_path))
        try:
            if mode == "memory":
                raw = extractor.execute(ct, _MASK_CACHE[mask_path])
            else:
                raw = extractor.execute(str(ct_path), str(mask_path))
            results[name] = {k: float(v) for k, v in raw.items() if not k.startswith("diagnostics_")}
        except ValueError as err:
            results[name] = f"failed: {err}"
    return results, time.perf_counter() - t0


def run_ctsam(ct_path: Path, labels_path: Path, params, workers: int) -> tuple[dict, float, object]:
    from ctsam.radiomics.extract import extract_case

    t0 = time.perf_counter()
    features = extract_case(ct_path, labels_path, params, case="example", workers=workers)
    seconds = time.perf_counter() - t0
    out = {
        r.name: (dict(r.features) if r.status == "ok" else f"{r.status}: {r.reason}")
        for r in features.results
        if r.status != "empty"
    }
    return out, seconds, features


def compare(a: dict, b: dict) -> tuple[float, str, int, list[str]]:
    """Max relative difference over all features both extracted; also mismatched statuses."""
    worst, worst_key, n = 0.0, "", 0
    mismatched = sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        fa, fb = a[name], b[name]
        if isinstance(fa, str) or isinstance(fb, str):
            if isinstance(fa, str) != isinstance(fb, str):
                mismatched.append(name)
            continue
        if set(fa) != set(fb):
            mismatched.append(name)
            continue
        for key, va in fa.items():
            vb = fb[key]
            n += 1
            if va == vb or (va != va and vb != vb):
                continue
            rel = abs(va - vb) / max(abs(va), abs(vb), 1e-300)
            if rel > worst:
                worst, worst_key = rel, f"{name}/{key}"
    return worst, worst_key, n, mismatched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=_default_data(), help="folder with example_ct.nii.gz (totalseg_examples)"
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="ctsam worker counts to time")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--baseline", choices=["files", "memory"], default="files")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import numpy as np
    import SimpleITK as sitk

    from ctsam.radiomics.extract import label_names
    from ctsam.radiomics.params import load_params

    ct_path = args.data / "example_ct.nii.gz"
    labels_path = args.data / "example_seg_fast_force_split.nii.gz"
    if not ct_path.is_file():
        print(f"test data not found at {args.data} (set CTSAM_TEST_DATA or --data)")
        return 2
    params = load_params("totalseg")
    size = sitk.ReadImage(str(ct_path)).GetSize()
    print(f"case: {ct_path.name} {size[0]}x{size[1]}x{size[2]} voxels, labels {labels_path.name}")
    print(f"settings: {params.path.name} (shape + firstorder, resampledPixelSpacing 3 mm), baseline: {args.baseline}")
    print(f"machine: {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory(prefix="ctsam_bench_radiomics_") as tmp:
        masks = write_masks(labels_path, label_names(labels_path), Path(tmp))
        if args.baseline == "memory":
            _MASK_CACHE.update({p: sitk.ReadImage(str(p)) for p in masks.values()})
        print(f"structures: {len(masks)}")
        times: dict[str, list[float]] = {"baseline": []}
        cpu: dict[str, list[float]] = {"baseline": []}
        results: dict[str, dict] = {}
        loads = []
        for rep in range(args.repeats):
            c0 = cpu_seconds()
            res, sec = baseline(ct_path, masks, params.path, args.baseline)
            cpu["baseline"].append(cpu_seconds() - c0)
            times["baseline"].append(sec)
            results["baseline"] = res
            loads.append(os.getloadavg()[0])
            print(f"  run {rep + 1}: baseline {sec:7.2f} s, {cpu['baseline'][-1]:6.2f} CPU s (load {loads[-1]:.2f})")
            for w in args.workers:
                c0 = cpu_seconds()
                res, sec, feats = run_ctsam(ct_path, labels_path, params, w)
                key = f"ctsam x{w}"
                cpu.setdefault(key, []).append(cpu_seconds() - c0)
                times.setdefault(key, []).append(sec)
                results[key] = res
                loads.append(os.getloadavg()[0])
                print(f"  run {rep + 1}: {key:8s} {sec:7.2f} s, {cpu[key][-1]:6.2f} CPU s (load {loads[-1]:.2f})")

    base = min(times["baseline"])
    print()
    base_cpu = min(cpu["baseline"])
    print(
        f"{'method':<12} {'best s':>8} {'median s':>9} {'speed-up':>9} {'CPU s':>7} {'CPU ratio':>9}  values vs baseline"
    )
    for key, ts in times.items():
        line = (
            f"{key:<12} {min(ts):8.2f} {statistics.median(ts):9.2f} {base / min(ts):8.2f}x "
            f"{min(cpu[key]):7.2f} {base_cpu / min(cpu[key]):8.2f}x"
        )
        if key != "baseline":
            worst, where, n, mismatched = compare(results["baseline"], results[key])
            line += f"  max rel diff {worst:.1e} over {n} values" + (f" (at {where})" if where else "")
            if mismatched:
                line += f"; status differs for {mismatched}"
        print(line)
    ok = sum(1 for v in results["baseline"].values() if not isinstance(v, str))
    print(
        f"structures extracted by the baseline: {ok}/{len(results['baseline'])}; "
        f"load average during runs: {np.mean(loads):.2f} (min {min(loads):.2f}, max {max(loads):.2f})"
    )
    print(
        "speed-up = baseline wall time / method wall time (best of runs); CPU ratio = baseline CPU s / method CPU s "
        "(process + worker processes; independent of how busy the machine is)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
