"""Seconds and peak memory per lesion of ``ctsam lesions`` (one click -> one lesion on the CT grid).

Usage::

    python benchmarks/lesions.py                        # CPU: tiny (baseline) and vit_b (published), 1 lesion each
    python benchmarks/lesions.py --lesions 3 --variants tiny vit_b
    python benchmarks/lesions.py --device cuda          # on a GPU (bf16 autocast, as the stage runs there)

For each model variant (random weights: speed does not depend on the values) the lesion engine runs
on a synthetic 0.8 x 0.8 x 1.5 mm CT (256 x 256 x 160 voxels) with ``--lesions`` clicks, exactly as
``ctsam lesions`` does (patch resampling, normalisation, forward, paste back, component, measures).
Per lesion it reports wall seconds, the share spent in the network forward, and the peak memory above
the level before the lesion (CUDA: ``max_memory_allocated``; CPU: process RSS sampled every 2 ms).
The baseline is the first variant (default ``tiny``: the same code with a small encoder), measured in
the same run; the ratio column is each variant's median seconds per lesion over the baseline's.
The published configuration is ``vit_b`` at 128^3, 1 mm (about 4 minutes and 8 GB per lesion on
2 CPU cores): run it where that is acceptable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # peak_memory beside this script

from peak_memory import PeakMemory  # noqa: E402

from ctsam.lesions.clicks import Click
from ctsam.lesions.engine import LesionEngine, LesionSettings
from ctsam.model import set_deterministic
from ctsam.volume import CTVolume, Geometry


def synthetic_case(n_lesions: int, seed: int = 0) -> tuple[CTVolume, list[Click]]:
    """A 256 x 256 x 160 CT with an organ and ``n_lesions`` spherical lesions; one click per lesion."""
    rng = np.random.default_rng(seed)
    geom = Geometry((160, 256, 256), (0.8, 0.8, 1.5), (-102.4, -102.4, -120.0))
    zz, yy, xx = np.ogrid[:160, :256, :256]
    organ = ((xx - 128) / 90.0) ** 2 + ((yy - 128) / 80.0) ** 2 + ((zz - 80) / 50.0) ** 2 <= 1
    hu = np.where(organ, 60, -850).astype(np.int16)
    clicks = []
    for k in range(n_lesions):
        c = np.array([80 + 15 * np.sin(k), 128 + 40 * np.cos(2 * k), 128 + 50 * np.sin(3 * k + 1)])
        r_mm = 6 + 3 * (k % 3)
        d = np.sqrt(((xx - c[2]) * 0.8) ** 2 + ((yy - c[1]) * 0.8) ** 2 + ((zz - c[0]) * 1.5) ** 2)
        hu[d <= r_mm] = -10
        w = geom.index_to_world(c[::-1])
        clicks.append(Click(k + 1, (float(w[0]), float(w[1]), float(w[2])), None, f"lesion {k + 1}"))
    hu = (hu + rng.normal(0, 10, hu.shape)).astype(np.int16)
    return CTVolume(hu, geom), clicks


def bench_variant(variant: str, ct: CTVolume, clicks: list[Click], device, *, amp: bool) -> dict:
    import torch

    from ctsam.model import build_model

    torch.manual_seed(0)
    model = build_model("sam3d_adapter", variant).to(device).eval()
    engine = LesionEngine({"": model}, LesionSettings(amp_bf16=amp), device)
    forward_s: list[float] = []
    inner = engine.forward

    def timed_forward(m, patch):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = inner(m, patch)
        forward_s.append(time.perf_counter() - t)
        return out

    engine.forward = timed_forward  # type: ignore[method-assign]
    seconds, peaks = [], []
    for click in clicks:
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            pred = engine.predict(ct, click)
            seconds.append(time.perf_counter() - t0)
        peaks.append(mem.peak_mib)
        print(
            f"  {variant}: lesion {click.lesion_id}: {seconds[-1]:.2f} s (forward {forward_s[-1]:.2f} s), "
            f"peak +{mem.peak_mib:.0f} MiB, {int(pred.mask.sum())} voxels",
            flush=True,
        )
    return {
        "variant": variant,
        "spec": model.input_spec,
        "params": model.n_parameters(),
        "s_per_lesion": statistics.median(seconds),
        "forward_s": statistics.median(forward_s[: len(clicks)]),
        "peak_mib": max(peaks),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["tiny", "vit_b"],
        help="sam3d_adapter variants; the first is the baseline (default: tiny vit_b)",
    )
    parser.add_argument("--lesions", type=int, default=1, help="clicks (lesions) per variant")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_deterministic()
    device = torch.device(args.device)
    ct, clicks = synthetic_case(args.lesions)
    print(
        f"ctsam lesions benchmark: {ct.geometry.describe()}, {len(clicks)} lesion(s), device {device}"
        f"{' (bf16 autocast)' if device.type == 'cuda' and not args.no_amp else ''}, "
        f"{torch.get_num_threads()} CPU thread(s), torch {torch.__version__}",
        flush=True,
    )
    rows = [bench_variant(v, ct, clicks, device, amp=not args.no_amp) for v in args.variants]
    base = rows[0]["s_per_lesion"]
    print()
    print(
        f"{'variant':8} {'params':>12} {'patch':>12} {'s/lesion':>9} {'forward':>8} {'fwd %':>6} "
        f"{'peak MiB':>9} {'x base':>7}"
    )
    for r in rows:
        patch = "x".join(map(str, r["spec"].patch_size_zyx))
        print(
            f"{r['variant']:8} {r['params']:>12,} {patch:>12} {r['s_per_lesion']:>9.2f} {r['forward_s']:>8.2f} "
            f"{100 * r['forward_s'] / r['s_per_lesion']:>5.0f}% {r['peak_mib']:>9.0f} "
            f"{r['s_per_lesion'] / base:>7.1f}"
        )
    print(
        f"(baseline: {rows[0]['variant']}, same run; median over {len(clicks)} lesion(s); peak memory above the "
        "level before each lesion)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
