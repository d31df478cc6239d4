"""Seconds and peak memory per one-click forward of the 3DSAM-adapter lesion model.

    python benchmarks/lesion_model.py                      # published vit_b, CPU, random (seeded) weights
    python benchmarks/lesion_model.py --variant tiny --reps 3
    python benchmarks/lesion_model.py --device cuda        # bf16 autocast on a GPU
    python benchmarks/lesion_model.py --checkpoint kits.pth --preset kits

Each run times ctsam's forward (:meth:`OneClickSegmenter.logits`: slice-chunked upsampling and patch
embedding, attention a few windows at a time) and, as the baseline in the same run, the published
test-time forward as ``test.py`` writes it (the whole 3-channel patch upsampled to 512^3, all 512
slices embedded at once, all attention windows at once) on the same weights and input, and prints the
ratio of both. Peak memory: CUDA allocator peak on a GPU, sampled process RSS above the level at start
on CPU. The first forward is a warm-up (not timed) unless ``--reps 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # peak_memory beside this script

from peak_memory import PeakMemory  # noqa: E402

from ctsam.model import build_model, load_model  # noqa: E402


def published_forward(net, patch: torch.Tensor, points_dwh: torch.Tensor) -> torch.Tensor:
    """The published test.py ``model_predict`` written as published (no chunking), for the baseline."""
    from ctsam.model import sam3d_encoder

    p = net.config.patch_size
    out = F.interpolate(
        patch.repeat(1, 3, 1, 1, 1).float(), scale_factor=net.config.upsample_size / p, mode="trilinear"
    )
    slices = out[0].transpose(0, 1)
    del out
    chunk = sam3d_encoder.ATTENTION_WINDOW_CHUNK
    sam3d_encoder.ATTENTION_WINDOW_CHUNK = 10**9
    try:
        deepest, features = net.image_encoder(slices)
    finally:
        sam3d_encoder.ATTENTION_WINDOW_CHUNK = chunk
    del slices
    features.append(deepest)
    features[3] = net.prompt_encoders[3](features[3], points_dwh, (p, p, p))
    dec = 2 * net.config.grid
    features.append(F.interpolate(patch[0, 0].permute(1, 2, 0)[None, None], scale_factor=dec / p, mode="trilinear"))
    return net.mask_decoder(features, 2, p // dec).permute(0, 1, 4, 2, 3)


def timed(fn, device: torch.device, reps: int) -> tuple[float, float, torch.Tensor]:
    """(median seconds, peak MiB, output) over ``reps`` calls after one warm-up (none when reps == 1)."""
    if reps > 1:
        fn()
    times, peak, out = [], 0.0, None
    for _ in range(reps):
        del out
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.peak_mib)
    times.sort()
    return times[len(times) // 2], peak, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="vit_b", choices=("vit_b", "tiny"))
    ap.add_argument("--checkpoint", default=None, help="a 3DSAM-adapter model file (default: random weights)")
    ap.add_argument("--preset", default=None, help="preset for a published .pth checkpoint")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the published (unchunked) forward")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    torch.manual_seed(0)
    if args.checkpoint:
        model = load_model(args.checkpoint, preset=args.preset, device=str(device))
    else:
        model = build_model("sam3d_adapter", args.variant).eval().to(device)
    p = model.input_spec.patch_size_zyx[0]
    gen = torch.Generator().manual_seed(1)
    patch = torch.randn(1, 1, p, p, p, generator=gen).to(device)
    points_zyx = torch.tensor([[[p / 2, p / 2 - 3, p / 2 + 5]]], device=device)
    labels = torch.ones(1, 1, dtype=torch.long, device=device)
    amp = "bf16 autocast" if device.type == "cuda" else "float32"
    print(
        f"3DSAM-adapter one-click forward: {model.family} {model.variant}, {model.n_parameters():,} state-dict "
        f"values, patch {p}^3, device {device} ({amp}), torch {torch.__version__}, {args.threads} CPU threads"
    )

    with torch.inference_mode():
        s, mib, ours = timed(lambda: model.logits(patch, points_zyx, labels), device, args.reps)
        print(f"ctsam forward:      {s:8.2f} s   peak {mib:9.0f} MiB")
        if not args.no_baseline:
            net = model.module
            pts_dwh = points_zyx[..., [0, 2, 1]]
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

            def baseline() -> torch.Tensor:
                with ctx:
                    return published_forward(net, patch, pts_dwh).float()

            bs, bmib, ref = timed(baseline, device, args.reps)
            diff = (ours - ref).abs().max().item()
            print(f"published forward:  {bs:8.2f} s   peak {bmib:9.0f} MiB   (baseline, same weights and input)")
            print(
                f"ratio ctsam/published: time {s / bs:.2f}x, peak memory {mib / max(bmib, 1e-9):.2f}x; "
                f"max |logit difference| {diff:.2e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
