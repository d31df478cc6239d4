"""Per-patch encode/decode latency, peak memory and batched decode throughput of ctsam.model.

Usage::

    python benchmarks/model_forward.py                          # CPU, restv2_tiny + micro
    python benchmarks/model_forward.py --variants micro --reps 5
    python benchmarks/model_forward.py --device cuda --amp-dtype fp16
    python benchmarks/model_forward.py --weights ckpt_1000/params.pth   # real weights for the AMP check

Figures: median wall time over ``--reps`` runs (after one warm-up), peak memory of the call (CUDA:
``max_memory_allocated``; CPU: the rise of the process RSS sampled every 2 ms), and decode throughput in
prompt sets per second for B prompt sets decoded against one encoded patch (features batch 1,
broadcast). The baseline for the throughput ratio is B=1 measured in the same run. On CUDA (or with
``--amp-check`` on CPU) the decode also runs under autocast and the largest logits difference to float32
is checked against ``--amp-tol`` (1e-2); the exit code is 1 when it is exceeded.

Weights are random unless ``--weights`` is given (speed does not depend on the values; the AMP error
does, so use the real checkpoint for a meaningful AMP check).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # peak_memory beside this script

from peak_memory import PeakMemory  # noqa: E402

from ctsam.model import build_model, load_model  # noqa: E402

S = 64


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, reps: int) -> tuple[float, float, object]:
    """(median seconds, peak MiB, last result) of ``fn()`` after one warm-up call."""
    result = fn()
    _sync(device)
    times, peak = [], 0.0
    for _ in range(reps):
        del result
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            result = fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.peak_mib)
    return statistics.median(times), peak, result


def prompts(b: int, device: torch.device, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pts = torch.randint(4, S - 4, (b, 3, 3), generator=gen).float()
    labels = torch.tensor([[1, 1, 0]] * b)
    prev = torch.rand(b, 1, S, S, S, generator=gen)
    return pts.to(device), labels.to(device), prev.to(device)


def bench_variant(model, args, device: torch.device, batches: list[int], reps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, S, S, S, generator=gen).to(device)
    n_params = model.n_parameters() / 1e6
    with torch.inference_mode():
        t_enc, m_enc, feats = timed(lambda: model.encode(image), device, reps)
        print(f"\n{model.variant} ({n_params:.2f} M parameters, {device.type}, {torch.get_num_threads()} CPU threads)")
        print(f"  encode  B=1: {t_enc * 1e3:9.1f} ms   peak {m_enc:8.1f} MiB")
        base = None
        for b in batches:
            pts, labels, prev = prompts(b, device, gen)
            t_dec, m_dec, _ = timed(lambda: model.decode(feats, pts, labels, prev), device, reps)
            rate = b / t_dec
            base = base or rate
            print(
                f"  decode  B={b:<3d} {t_dec * 1e3:9.1f} ms   peak {m_dec:8.1f} MiB   "
                f"{rate:8.2f} prompt sets/s   x{rate / base:5.2f} vs B={batches[0]}"
            )
        t_cpp, m_cpp, _ = timed(lambda: model.cross_patch_heatmap(image, image > 0.5, image), device, reps)
        print(f"  cpp     B=1: {t_cpp * 1e3:9.1f} ms   peak {m_cpp:8.1f} MiB")
        if args.amp_check or device.type == "cuda":
            amp_check(model, feats, device, args, reps)


def amp_check(model, feats, device: torch.device, args, reps: int) -> None:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp_dtype]
    gen = torch.Generator().manual_seed(1)
    pts, labels, prev = prompts(args.amp_batch, device, gen)
    ref = model.decode(feats, pts, labels, prev)
    with torch.autocast(device_type=device.type, dtype=dtype):
        t_amp, m_amp, amp = timed(lambda: model.decode(feats, pts, labels, prev), device, reps)
    err = (amp["logits"].float() - ref["logits"]).abs().max().item()
    perr = (amp["probs"].float() - ref["probs"]).abs().max().item()
    ok = err <= args.amp_tol
    args.amp_failed |= not ok
    print(
        f"  autocast {args.amp_dtype} decode B={pts.shape[0]}: {t_amp * 1e3:9.1f} ms   peak {m_amp:8.1f} MiB   "
        f"max |logits - fp32| {err:.2e}, max |probs - fp32| {perr:.2e}  -> {'OK' if ok else 'EXCEEDS'} "
        f"tolerance {args.amp_tol:g}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--variants", default="micro,restv2_tiny")
    p.add_argument(
        "--batches",
        default="1,8,32",
        type=lambda s: [int(x) for x in s.split(",")],
        help="decode batch sizes (prompt sets per encoded patch)",
    )
    p.add_argument(
        "--tiny-cpu-batches",
        default="1,8",
        type=lambda s: [int(x) for x in s.split(",")],
        help="batch sizes for restv2_tiny on CPU (B=32 takes minutes and ~10 GB)",
    )
    p.add_argument("--reps", type=int, default=0, help="timed repetitions (default: 3; 1 for restv2_tiny on CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--weights", default=None, help="checkpoint for restv2_tiny (params.pth or .safetensors)")
    p.add_argument("--amp-check", action="store_true", help="also run the autocast check on CPU")
    p.add_argument("--amp-dtype", choices=["bf16", "fp16"], default="fp16")
    p.add_argument("--amp-tol", type=float, default=1e-2)
    p.add_argument("--amp-batch", type=int, default=4, help="prompt sets in the autocast check")
    args = p.parse_args(argv)
    args.amp_failed = False
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    print(f"ctsam model forward benchmark: torch {torch.__version__}, device {device}, patch {S}^3")
    for variant in args.variants.split(","):
        if variant == "restv2_tiny" and args.weights:
            model = load_model(args.weights, device=device).module
        else:
            torch.manual_seed(0)
            model = build_model("ctsam3d", variant).module.to(device).eval()
        cpu_tiny = device.type == "cpu" and variant == "restv2_tiny"
        batches = args.tiny_cpu_batches if cpu_tiny else args.batches
        reps = args.reps or (1 if cpu_tiny else 3)
        bench_variant(model, args, device, batches, reps)
        del model
    return 1 if args.amp_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
