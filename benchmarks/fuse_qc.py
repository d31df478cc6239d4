"""Benchmark: fusion + QC of a synthetic whole-body-sized case, against a naive one-hot baseline.

Case: a 512×512×Z grid (default Z = 1000, 0.8×0.8×1.5 mm) holding 117 ellipsoidal structures on a
13×3×3 lattice (a coarse label map), refined probabilities for all of them (each a uint8 crop of its
bounding box + 4 voxels, slightly larger than the coarse ellipsoid, so refinement changes every
boundary), and a CT built from the labels (int16 HU per structure plus a texture).

Measured in this process (peak RSS via ``resource.getrusage``; inputs are built first and their
footprint is reported separately):

* ``ctsam.fuse.fusion.fuse`` (bounding-box streaming, one label volume + one uint8 best-probability volume);
* ``ctsam.qc.case.compute_case_qc`` (all 117 structures: volumes, components, HU, border, laterality,
  Dice/HD95/MSD/NSD against the coarse map).

Baseline, in a subprocess so its RSS is its own: the naive fusion -- 117 full-size float32
probability volumes (refined probabilities pasted into zeros; coarse masks as 1.0 where a structure
was not refined), then ``argmax`` over the stack with a background threshold. 117 full float
volumes of 512×512×1000 need 122 GB, so the baseline runs on a ``--baseline-z`` slab (default 16
slices) and its time and memory are extrapolated linearly in Z (both scale with the voxel count);
the report says so.

Run:  PYTHONPATH=$PWD python benchmarks/fuse_qc.py [--z 1000] [--baseline-z 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

N_STRUCTURES = 117
SHAPE_YX = (512, 512)
SPACING_XYZ = (0.8, 0.8, 1.5)
GRID = (13, 3, 3)  # z, y, x lattice of structures


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB: ``VmHWM`` (reset by exec, unlike
    ``ru_maxrss``, which a child started with fork+exec inherits from its parent)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs), so the peak
    measured afterwards belongs to fusion + QC, not to building the synthetic inputs."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def build_case(nz: int, seed: int = 7):
    """(coarse LabelMap, RefinedCase, CTVolume, vocabulary) of the synthetic case."""
    from ctsam.fuse.fusion import build_vocabulary
    from ctsam.refine.refined_file import RefinedCase, StructureProbability
    from ctsam.volume import CTVolume, Geometry, LabelMap

    rng = np.random.default_rng(seed)
    shape = (nz, *SHAPE_YX)
    geometry = Geometry(shape, SPACING_XYZ, (-204.8, -204.8, 0.0))
    labels = np.zeros(shape, np.uint8)
    names = {i: f"structure_{i:03d}" for i in range(1, N_STRUCTURES + 1)}
    structures = []
    cell = [n // g for n, g in zip(shape, GRID)]
    idx = 0
    for gz in range(GRID[0]):
        for gy in range(GRID[1]):
            for gx in range(GRID[2]):
                idx += 1
                lo = np.array([gz * cell[0], gy * cell[1], gx * cell[2]])
                radii = np.array(cell) * rng.uniform(0.30, 0.46, 3)
                center = lo + np.array(cell) / 2.0 + rng.uniform(-2, 2, 3)
                # coarse ellipsoid, written inside its box
                b0 = np.maximum(np.floor(center - radii).astype(int), 0)
                b1 = np.minimum(np.ceil(center + radii).astype(int) + 1, shape)
                zz, yy, xx = np.ogrid[b0[0] : b1[0], b0[1] : b1[1], b0[2] : b1[2]]
                d = (
                    ((zz - center[0]) / radii[0]) ** 2
                    + ((yy - center[1]) / radii[1]) ** 2
                    + ((xx - center[2]) / radii[2]) ** 2
                )
                view = labels[b0[0] : b1[0], b0[1] : b1[1], b0[2] : b1[2]]
                view[d <= 1.0] = idx
                # refined probability: a soft, 4 % larger ellipsoid over the box + 4 voxels
                r0 = np.maximum(b0 - 4, 0)
                r1 = np.minimum(b1 + 4, shape)
                zz, yy, xx = np.ogrid[r0[0] : r1[0], r0[1] : r1[1], r0[2] : r1[2]]
                s = radii * 1.04
                d = ((zz - center[0]) / s[0]) ** 2 + ((yy - center[1]) / s[1]) ** 2 + ((xx - center[2]) / s[2]) ** 2
                p = 1.0 / (1.0 + np.exp(12.0 * (np.sqrt(d) - 1.0)))
                structures.append(
                    StructureProbability(
                        name=names[idx],
                        bbox_start_zyx=tuple(int(v) for v in r0),
                        probs_u8=np.clip(np.rint(p * 255), 0, 255).astype(np.uint8),
                        quality=float(rng.uniform(0.7, 0.95)),
                    )
                )
    hu = np.zeros(256, np.int16)
    hu[1 : N_STRUCTURES + 1] = rng.integers(-50, 250, N_STRUCTURES)
    hu[0] = -900  # air-ish background
    ct = hu[labels]  # int16, one pass, no wide temporaries
    coarse = LabelMap(labels, geometry, names)
    refined = RefinedCase(geometry, structures)
    vocab = build_vocabulary(list(names.values()), {}, list(names.values()), keep_unmapped=False)
    return coarse, refined, CTVolume(ct, geometry), vocab


def naive_baseline(nz: int) -> None:
    """Child process: one-hot float32 stack of all structures + argmax. Prints JSON."""
    from ctsam.config import load_config

    coarse, refined, _, vocab = build_case(nz)
    threshold = float(load_config()["fuse"]["threshold"])
    rss_inputs = peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    stack = np.zeros((N_STRUCTURES + 1, *coarse.array.shape), np.float32)  # channel 0 = background
    by_name = refined.by_name()
    for i, name in coarse.labels.items():
        s = by_name.get(name)
        if s is None:
            stack[i][coarse.array == i] = 1.0
        else:
            stack[i][s.slices] = s.probabilities()
    stack[0] = threshold  # background wins unless some structure reaches the threshold
    out = np.argmax(stack, axis=0).astype(np.uint8)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(
        json.dumps(
            {
                "z": nz,
                "wall_s": dt,
                "cpu_s": dc,
                "peak_rss_mb": peak_rss_mb(),
                "inputs_rss_mb": rss_inputs,
                "labelled": int(np.count_nonzero(out)),
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--z", type=int, default=1000, help="slices of the synthetic case (default 1000)")
    ap.add_argument("--baseline-z", type=int, default=16, help="slices for the naive baseline (extrapolated to --z)")
    ap.add_argument("--_baseline-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._baseline_child is not None:
        naive_baseline(args._baseline_child)
        return 0

    import logging

    from ctsam.config import load_config
    from ctsam.fuse.fusion import fuse
    from ctsam.qc.case import compute_case_qc

    logging.basicConfig(level=logging.WARNING)
    cfg = load_config()
    t0 = time.perf_counter()
    coarse, refined, ct, vocab = build_case(args.z)
    t_build = time.perf_counter() - t0
    rss_inputs = peak_rss_mb()
    reset_peak_rss()
    rss_resident = current_rss_mb()
    refined_mb = sum(s.probs_u8.nbytes for s in refined.structures) / 2**20

    t0, c0 = time.perf_counter(), time.process_time()
    result = fuse(coarse, refined, vocab, cfg["fuse"])
    t_fuse, c_fuse = time.perf_counter() - t0, time.process_time() - c0
    rss_fuse = peak_rss_mb()
    reset_peak_rss()
    n_refined = sum(s.source == "refined" for s in result.structures)

    t0, c0 = time.perf_counter(), time.process_time()
    doc = compute_case_qc(ct, result.labelmap, coarse, cfg["qc"], refined=refined)
    t_qc, c_qc = time.perf_counter() - t0, time.process_time() - c0
    rss_qc = peak_rss_mb()
    rss_total = max(rss_fuse, rss_qc)

    # baseline in a child process on a thin slab, extrapolated
    cmd = [sys.executable, __file__, "--_baseline-child", str(args.baseline_z)]
    t0 = time.perf_counter()
    child = subprocess.run(cmd, capture_output=True, text=True, check=True)
    base = json.loads(child.stdout.strip().splitlines()[-1])
    scale = args.z / args.baseline_z
    base_fuse_s = base["wall_s"] * scale
    base_stack_mb = (base["peak_rss_mb"] - base["inputs_rss_mb"]) * scale
    base_total_mb = base["peak_rss_mb"] * scale

    vox = args.z * SHAPE_YX[0] * SHAPE_YX[1]
    dices = [s["agreement"]["dice"] for s in doc["structures"] if s.get("agreement", {}).get("dice") is not None]
    print(
        f"case: {SHAPE_YX[1]}x{SHAPE_YX[0]}x{args.z} voxels ({vox / 1e6:.0f} M), {N_STRUCTURES} structures, "
        f"refined crops {refined_mb:.0f} MB (uint8); inputs built in {t_build:.1f} s"
    )
    print(
        f"inputs (coarse uint8 + CT int16 + refined crops): resident {rss_resident:.0f} MB; building them peaked at "
        f"{rss_inputs:.0f} MB (peak counter reset before fusion)"
    )
    print(
        f"ctsam fuse : wall {t_fuse:7.1f} s  cpu {c_fuse:7.1f} s   peak RSS {rss_fuse:6.0f} MB   ({n_refined} structures refined)"
    )
    print(
        f"ctsam qc   : wall {t_qc:7.1f} s  cpu {c_qc:7.1f} s   peak RSS {rss_qc:6.0f} MB   ({doc['n_structures']} structures, "
        f"Dice median {np.median(dices):.3f}, {doc['summary']['n_flags']} flags)"
    )
    print(
        f"fuse + qc  : wall {t_fuse + t_qc:7.1f} s  cpu {c_fuse + c_qc:7.1f} s   peak RSS {rss_total:.0f} MB (inputs included) "
        f"({'within' if rss_total <= 3072 else 'ABOVE'} the 3 GB budget)"
    )
    print(
        f"naive one-hot baseline, measured on {args.baseline_z} slices in a subprocess: wall {base['wall_s']:.2f} s, cpu {base['cpu_s']:.2f} s, "
        f"peak RSS {base['peak_rss_mb']:.0f} MB (of which inputs {base['inputs_rss_mb']:.0f} MB)"
    )
    print(
        f"  extrapolated x{scale:.1f} to {args.z} slices: fusion wall {base_fuse_s:.1f} s (cpu {base['cpu_s'] * scale:.1f} s), one-hot stack "
        f"{base_stack_mb / 1024:.1f} GB, total {base_total_mb / 1024:.1f} GB (117+1 float32 volumes = "
        f"{(N_STRUCTURES + 1) * vox * 4 / 2**30:.1f} GiB)"
    )
    print(
        f"ratio naive/ctsam fusion: wall x{base_fuse_s / t_fuse:.1f}, cpu x{base['cpu_s'] * scale / c_fuse:.1f}, "
        f"peak memory x{base_total_mb / rss_fuse:.1f}"
    )
    print("(wall times on a shared machine include waiting for CPUs; cpu = process time of this process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
