"""Benchmark: the refinement engine against a naive per-click loop, on the TotalSegmentator example CT.

    PYTHONPATH=. python benchmarks/refine_engine.py                     # micro model, CPU, subset
    PYTHONPATH=. python benchmarks/refine_engine.py --structures all    # every structure (slow on CPU)
    PYTHONPATH=. python benchmarks/refine_engine.py --device cuda --variant restv2_tiny --structures all \
        --batch-size 16 --gpu-batch-test                                  # GPU figures (bf16)
    PYTHONPATH=. python benchmarks/refine_engine.py --device cuda --variant restv2_tiny --ct BIG.nii.gz \
        --coarse BIG_SEG.nii.gz --structures all --no-naive              # full case on a 512x512x~500 CT

Prints, for the engine and (in the same run) for the naive loop of the published tool (one structure
at a time, one 64^3 patch per positive click, encoder re-run for every click, patch pasted by
assignment into a full-size canvas): distinct patches encoded, decodes, rounds, wall time per step,
decodes per second, peak memory; and per structure the decodes spent against the Dice the refined
mask reaches against the coarse mask (the only reference available; with random weights the Dice
says nothing about quality, only the bookkeeping is meaningful).

Weights: random (seeded) unless --checkpoint is given. --spacing-mm overrides the model frame
spacing (the published network works at 1.5 mm; 3.0 mm keeps a CPU run short).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np


class PeakRSS:
    """Peak resident memory (GB) of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def gb(self) -> float:
        return self.peak / 1e9


def coarse_dice(labels: np.ndarray, label: int, probs_u8: np.ndarray, start_zyx) -> float:
    """Dice between (probs >= 0.5) placed at ``start_zyx`` on the CT grid and ``labels == label``."""
    from ctsam.masks import dice

    ref = labels == label
    pred = np.zeros_like(ref)
    sl = tuple(slice(s, s + n) for s, n in zip(start_zyx, probs_u8.shape))
    pred[sl] = probs_u8 >= 128
    return dice(pred, ref)


def naive_loop(model, ct, prompts, frame_spacing_mm: float, device):
    """The published tool's loop: per structure, per positive click, crop + encode + decode + assign-paste."""
    import torch

    from ctsam.refine.patching import box_around, crop_box, model_frame_for, resample, subgrid, world_to_frame_zyx
    from ctsam.refine.predictor import PatchPredictor
    from ctsam.refine.refined_file import probs_to_u8

    pred = PatchPredictor(model, device=device, amp_bf16=True, batch_size=1)
    frame = model_frame_for(ct.geometry, frame_spacing_mm)
    frame_hu = resample(ct.array, ct.geometry, frame, linear=True, default=-1024.0)
    image = pred.normalise(frame_hu)
    pad = float(pred.normalise(np.array([-1024.0]))[0])
    out = {}
    n_enc = n_dec = 0
    t_enc = t_dec = 0.0
    for name in prompts.structure_names():
        canvas = np.zeros(frame.shape_zyx, np.float32)  # full-size canvas per structure, as the tool does
        for ps in prompts.for_structure(name):
            for click in ps.positives:
                c = world_to_frame_zyx(frame, click.world_xyz_mm)
                box = box_around(c, 64, 1)
                patch = torch.from_numpy(crop_box(image, box, pad_value=np.float32(pad))[None, None]).to(device)
                rel = np.floor(c - np.asarray(box.start_zyx) + 0.5).astype(int)
                pts = torch.tensor([[[rel[2], rel[1], rel[0]]]])
                with torch.inference_mode(), pred_autocast(pred):
                    t0 = time.perf_counter()
                    f = model.encode(patch)
                    sync(device)
                    t_enc += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    o = model.decode(f, pts.to(device), torch.ones(1, 1, dtype=torch.long, device=device), None)
                    probs = o["probs"][0, 0].float().cpu().numpy()
                    t_dec += time.perf_counter() - t0
                n_enc += 1
                n_dec += 1
                src = [slice(max(0, s), min(n, s + 64)) for s, n in zip(box.start_zyx, frame.shape_zyx)]
                dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, box.start_zyx))
                canvas[tuple(src)] = probs[dst]  # assignment: a later patch overwrites the overlap
        on_ct = probs_to_u8(resample(canvas, frame, ct.geometry, linear=True))
        out[name] = on_ct
        del canvas
    _ = subgrid
    return out, {"encodes": n_enc, "decodes": n_dec, "encode_s": t_enc, "decode_s": t_dec}


def pred_autocast(pred):
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if pred.amp else contextlib.nullcontext()


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_batch_test(model, device, batches=(1, 4, 16), repeats=5):
    """Decodes per second at several batch sizes, one shared encoded patch, bf16 autocast."""
    import torch

    x = torch.rand(1, 1, 64, 64, 64, device=device)
    rows = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        f = model.encode(x)
        for b in batches:
            pts = torch.full((b, 3, 3), 32, device=device)
            lab = torch.ones(b, 3, dtype=torch.long, device=device)
            prev = torch.rand(b, 1, 64, 64, 64, device=device)
            model.decode(f, pts, lab, prev)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                model.decode(f, pts, lab, prev)
            sync(device)
            dt = time.perf_counter() - t0
            rows.append((b, b * repeats / dt))
    return rows


def main() -> None:
    import torch

    from ctsam import api
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.model import build_model, load_model, resolve_device, set_deterministic
    from ctsam.refine.engine import RefineSettings
    from ctsam.seed.seeding import SeedSettings, seed_case

    data = Path(os.environ.get("CTSAM_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=str(data / "totalseg_examples" / "example_ct.nii.gz"))
    ap.add_argument("--coarse", default=str(data / "totalseg_examples" / "example_seg_fast_force_split.nii.gz"))
    ap.add_argument("--variant", default="micro")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--spacing-mm", type=float, default=None, help="model frame spacing (default: checkpoint's)")
    ap.add_argument(
        "--structures", default="liver,colon,spleen,kidney_left,vertebrae_L3,rib_left_9", help="comma list, or 'all'"
    )
    ap.add_argument("--tile-size-mm", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--gpu-batch-test", action="store_true", help="decodes/s at batch 1, 4, 16 (bf16 on CUDA)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    set_deterministic()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.checkpoint:
        model = load_model(args.checkpoint, device=device)
    else:
        model = build_model("ctsam3d", args.variant).eval().to(device)
    spacing = args.spacing_mm or model.input_spec.spacing_zyx_mm[0]
    if spacing != model.input_spec.spacing_zyx_mm[0]:
        model.update_metadata(spacing_mm=spacing)
    patch_mm = 64 * spacing

    ct = read_ct(args.ct)
    coarse = read_labelmap(args.coarse)
    include = () if args.structures == "all" else tuple(args.structures.split(","))
    tile = args.tile_size_mm or (patch_mm - 12.0)
    t0 = time.perf_counter()
    prompts = seed_case(coarse, SeedSettings(include=include, tile_size_mm=tile))
    t_seed = time.perf_counter() - t0
    n_pos = sum(len(p.positives) for p in prompts.prompt_sets)
    print(f"case: {Path(args.ct).name} {ct.geometry.describe()}")
    print(
        f"model: {model.variant} ({model.n_parameters() / 1e6:.2f} M parameters, "
        f"{'random weights' if not args.checkpoint else args.checkpoint}), device {device}, "
        f"frame {spacing} mm (patch {patch_mm:.0f} mm), torch threads {args.threads}"
    )
    print(
        f"seed: {len(prompts.structures)} structures, {len(prompts.prompt_sets)} prompt sets, "
        f"{n_pos} positive clicks, {t_seed:.2f} s"
    )

    settings = RefineSettings(rounds=args.rounds, batch_size=args.batch_size, device=str(device), amp_bf16=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as mem:
        run = api.refine_structures(ct, prompts, model=model, settings=settings)
    result, timing = run.refined, run.timing_s
    gpu_peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    c = result.meta["counts"]
    print("\n== engine (encode each patch once, batched decodes, settle/coverage stops, propagation)")
    print(
        f"distinct patches encoded {c['patches_encoded']}, decodes {c['decodes']} in {c['decode_batches']} "
        f"batches, rounds {c['rounds']}, jobs {c['jobs']} ({c['propagated_jobs']} propagated)"
    )
    steps = ["resample_s", "plan_s", "encode_s", "decode_s", "propagation_s", "assemble_s", "total_s"]
    print("wall time per step (s): " + ", ".join(f"{k[:-2]} {timing[k]:.2f}" for k in steps))
    print(
        f"decodes per second {timing['decodes_per_s']:.2f}; peak RSS {mem.gb:.2f} GB; peak GPU memory {gpu_peak:.2f} GB"
    )

    print("\nper structure: decodes, patches, Dice vs coarse (engine)")
    by_name = result.by_name()
    label_of = {v: k for k, v in coarse.labels.items()}
    dices = {}
    for name in prompts.structure_names():
        st = result.meta["structures"][name]
        s = by_name.get(name)
        d = coarse_dice(coarse.array, label_of[name], s.probs_u8, s.bbox_start_zyx) if s else float("nan")
        dices[name] = d
        print(
            f"  {name:28s} decodes {st['decodes']:3d}  patches {st['patches']:2d}  Dice {d:.3f}  "
            f"stops {','.join(st['stop_reasons'])}"
        )

    if not args.no_naive:
        with PeakRSS() as mem_n:
            t0 = time.perf_counter()
            naive, nst = naive_loop(model, ct, prompts, spacing, device)
            t_naive = time.perf_counter() - t0
        print("\n== naive loop (published tool: one structure at a time, one patch per click, encoder every time)")
        print(
            f"patches encoded {nst['encodes']}, decodes {nst['decodes']}, rounds 1; encode {nst['encode_s']:.2f} s, "
            f"decode {nst['decode_s']:.2f} s, total {t_naive:.2f} s; decodes per second "
            f"{nst['decodes'] / max(nst['decode_s'], 1e-9):.2f}; peak RSS {mem_n.gb:.2f} GB"
        )
        nd = {n: coarse_dice(coarse.array, label_of[n], p, (0, 0, 0)) for n, p in naive.items()}
        print(
            "per structure Dice vs coarse (naive / engine): "
            + ", ".join(f"{n} {nd[n]:.3f}/{dices[n]:.3f}" for n in prompts.structure_names())
        )
        print(
            f"\nratios engine/naive: encodes {c['patches_encoded'] / max(nst['encodes'], 1):.2f}, "
            f"decodes {c['decodes'] / max(nst['decodes'], 1):.2f}, total time {timing['total_s'] / t_naive:.2f}"
        )

    if args.gpu_batch_test:
        rows = gpu_batch_test(model, device)
        base = rows[0][1]
        print("\n== decoder throughput, one shared patch" + (" (bf16 autocast)" if device.type == "cuda" else ""))
        for b, r in rows:
            print(f"  batch {b:2d}: {r:7.2f} decodes/s ({r / base:.2f}x batch 1)")


if __name__ == "__main__":
    main()
