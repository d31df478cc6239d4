"""``ctsam refine CT PROMPTS -o REFINED.npz --checkpoint MODEL``: promptable refinement of every structure."""

from __future__ import annotations

HELP = "refine every prompted structure with the promptable 3D network (per-structure probabilities)"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI)")
    parser.add_argument("prompts", help="prompts JSON from 'ctsam seed'")
    parser.add_argument("-o", "--output", required=True, help="refined result to write (refined.npz)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="model: published params.pth, ctsam .safetensors or builtin:NAME (default: config refine.checkpoint)",
    )
    parser.add_argument("--coarse", default=None,
                        help="the coarse label map the prompts were seeded from: the first round's mask prompt "
                             "(config refine.coarse_mask_prompt: auto uses it when the checkpoint was trained for it)")
    parser.add_argument("--device", default=None, help="cpu | cuda[:N] | auto (default: config refine.device)")
    parser.add_argument("--extra-clicks", default=None,
                        help="reviewer corrections JSON (see README 'seed and refine'); a missing file is an error")
    parser.add_argument("--timings", default=None, help="write timing figures (JSON) here (not deterministic)")


def run(args) -> int:
    import logging
    import time

    import torch

    from ctsam.config import load_config
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.model import load_model
    from ctsam.refine.predictor import PatchPredictor, resolve_device, set_deterministic
    from ctsam.seed.prompts import merge_corrections, read_corrections, read_prompts
    from ctsam.refine.engine import RefineEngine, RefineSettings
    from ctsam.refine.refined_file import save_refined
    from ctsam.volume import check_same_space

    from ctsam.weights import check_demo_weights

    log = logging.getLogger("ctsam.refine")
    config = load_config(args.config)
    checkpoint = args.checkpoint or config["refine"]["checkpoint"]
    # builtin:demo_* weights were trained on phantoms: refused on other CT unless allowed (then recorded)
    demo_on_real = check_demo_weights(checkpoint, args.ct, allow=config["weights"]["allow_demo_weights"],
                                      case=args.case)
    settings = RefineSettings.from_config(config["refine"])
    device = resolve_device(args.device or settings.device)
    set_deterministic()
    t0 = time.perf_counter()
    prompts = read_prompts(args.prompts, case=args.case)
    if args.extra_clicks:
        corrections = read_corrections(args.extra_clicks, case=args.case)
        prompts = merge_corrections(prompts, corrections)
        log.info("merged reviewer clicks for %d structure(s) from %s", len(corrections), args.extra_clicks)
    ct = read_ct(args.ct, case=args.case)
    check_same_space(ct.geometry, prompts.ct_geometry, name_a="CT", name_b="prompts' CT grid", case=args.case)
    coarse = None
    if args.coarse:
        coarse = read_labelmap(args.coarse, case=args.case)
        check_same_space(ct.geometry, coarse.geometry, name_a="CT", name_b="coarse labels", case=args.case)
    model = load_model(checkpoint, device=device)
    if model.family != "ctsam3d":
        from ctsam.errors import CheckpointError

        raise CheckpointError("refine needs an anatomy refinement model (family ctsam3d)", path=checkpoint,
                              found=f"a {model.family} model",
                              fix="pass a CT-SAM3D checkpoint; tumour models are used by 'ctsam lesions'")
    predictor = PatchPredictor(model, device=device, amp_bf16=settings.amp_bf16, batch_size=settings.batch_size,
                               cache_patches=settings.feature_cache_patches)
    engine = RefineEngine(predictor, settings)
    result, timing = engine.run(ct, prompts, case=args.case, coarse=coarse)
    result.meta["corrections"] = bool(args.extra_clicks)
    if demo_on_real:
        result.meta["demo_weights_on_real_ct"] = True
    save_refined(args.output, result)
    timing["wall_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        timing["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    if args.timings:
        atomic_write_json(args.timings, {"device": str(device), **timing, "counts": result.meta["counts"]})
    c = result.meta["counts"]
    log.info("refined %d structures (%d skipped): %d patches encoded, %d decodes in %d rounds, %.1f s on %s -> %s",
             len(result.structures), len(result.skipped), c["patches_encoded"], c["decodes"], c["rounds"],
             timing["wall_s"], device, args.output)
    return 0
