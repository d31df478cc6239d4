"""Seconds per training step of the demo lesion model's variant (``tiny32``, 32^3) against ``tiny`` (64^3).

    python benchmarks/lesion_train_step.py [--steps 30] [--threads 2]

Both variants train with the demo recipe (``full``, batch 1, Dice-CE) on the same synthetic lesion
case, interleaved in one run; the first ``--warmup`` steps of each are not timed. Prints median
seconds per step, the ratio tiny / tiny32, and the peak memory above the start of each loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # peak_memory beside this script

from peak_memory import PeakMemory  # noqa: E402

from ctsam.model import build_model  # noqa: E402
from ctsam.training.lesion_data import LesionPatchSampler, SamplingSettings  # noqa: E402
from ctsam.training.lesion_demo import DEMO_VARIANT, demo_input_spec, demo_settings  # noqa: E402
from ctsam.training.lesion_loop import LesionTrainer  # noqa: E402
from tests.training.test_sam3d_adapter_train import lesion_case  # noqa: E402


def trainer_for(variant: str, out: Path) -> LesionTrainer:
    torch.manual_seed(0)
    model = build_model("sam3d_adapter", variant)
    model.with_input_spec(demo_input_spec(model.input_spec.patch_size_zyx), output_classes=("background", "lesion"))
    spec = model.input_spec
    sampler = LesionPatchSampler(
        [lesion_case(0)],
        normalise=spec.normalise,
        zscore_sd=spec.zscore_mean_std[1],
        patch_size_zyx=spec.patch_size_zyx,
        seed=0,
        settings=SamplingSettings(augment=True, positive_fraction=1.0),
    )
    settings = dataclasses.replace(demo_settings(10**6, 60.0, 0), variant=variant, val_every=0)
    return LesionTrainer(settings, sampler, out, model=model)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = ("tiny", DEMO_VARIANT)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {v: trainer_for(v, Path(tmp) / v) for v in variants}
        times: dict[str, list[float]] = {v: [] for v in variants}
        peaks = dict.fromkeys(variants, 0.0)
        for step in range(args.warmup + args.steps):
            for v, tr in trainers.items():  # interleaved: both see the same machine state
                batch = tr.sampler.batch(step, 1)
                with PeakMemory(torch.device("cpu")) as mem:
                    t0 = time.perf_counter()
                    tr.train_step(batch)
                    dt = time.perf_counter() - t0
                if step >= args.warmup:
                    times[v].append(dt)
                    peaks[v] = max(peaks[v], mem.peak_mib)
    med = {v: statistics.median(t) for v, t in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} timed steps each")
    for v in variants:
        p = trainers[v].model.input_spec.patch_size_zyx[0]
        print(f"  {v:7s} {p}^3 patch: {med[v]:.3f} s/step (median), peak +{peaks[v]:.0f} MiB")
    print(f"  tiny / {DEMO_VARIANT} seconds per step: {med['tiny'] / med[DEMO_VARIANT]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
