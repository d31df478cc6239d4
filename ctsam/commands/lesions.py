"""``ctsam lesions CT --clicks CLICKS.tsv | --seeds SEEDS.nii.gz --checkpoint MODEL -o LESIONS.nii.gz``."""

from __future__ import annotations

HELP = "segment lesions from one click each (3DSAM-adapter models) -> lesion map + per-lesion measures (JSON)"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT image (NIfTI/NRRD/MHA, HU)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--clicks", help="CLICKS.tsv: lesion_id, x, y, z (world LPS mm) [, label]; one row per lesion")
    src.add_argument("--seeds", help="seed label map on the CT grid: each connected component becomes one click "
                                     "at its most interior voxel")
    src.add_argument("--no-clicks", action="store_true",
                     help="this case has no lesion clicks: write an empty lesion map and sidecar (workflow use)")
    parser.add_argument("-o", "--output", required=True,
                        help="lesion map to write (LESIONS.nii.gz; LESIONS.json and LESIONS.tsv are written beside it)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="[LABEL=]MODEL",
                        help="lesion model: published 3DSAM-adapter .pth (with --preset), ctsam .safetensors or "
                             "builtin:NAME; LABEL=MODEL maps a click label to its own model; repeatable "
                             "(default: config lesions.checkpoint / lesions.checkpoints)")
    parser.add_argument("--preset", default=None, choices=["kits", "lits", "msd_pancreas", "msd_colon"],
                        help="published input convention for a .pth that does not store one [config lesions.preset]")
    parser.add_argument("--labels", default=None,
                        help="label map on the CT grid (e.g. labels.nii.gz): name the structure containing each lesion")
    parser.add_argument("--device", default=None, help="cpu | cuda[:N] | auto [config lesions.device]")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability at or above which a voxel belongs to the lesion [config lesions.threshold]")


def run(args) -> int:
    import logging
    import time

    from ctsam.config import load_config
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.lesions.clicks import check_clicks_inside, clicks_from_seeds, read_clicks
    from ctsam.lesions.engine import LesionEngine, LesionResult, LesionSettings, resolve_device, set_deterministic
    from ctsam.lesions.models import load_models, parse_checkpoint_specs
    from ctsam.lesions.writer import write_lesions
    from ctsam.volume import check_same_space

    log = logging.getLogger("ctsam.lesions")
    t0 = time.perf_counter()
    cfg = load_config(args.config)["lesions"]
    settings = LesionSettings.from_config({**cfg, **({"threshold": args.threshold} if args.threshold is not None else {})})
    ct = read_ct(args.ct, case=args.case)
    labels = None
    if args.labels:
        labels = read_labelmap(args.labels, case=args.case)
        check_same_space(ct.geometry, labels.geometry, name_a="CT", name_b="label map (--labels)", case=args.case)
    if args.clicks:
        clicks = read_clicks(args.clicks, case=args.case)
        check_clicks_inside(clicks, ct.geometry, case=args.case, path=args.clicks)
    elif args.seeds:
        seeds = read_labelmap(args.seeds, case=args.case)
        check_same_space(ct.geometry, seeds.geometry, name_a="CT", name_b="seed label map", case=args.case)
        clicks = clicks_from_seeds(seeds, case=args.case)
    else:
        clicks = []
    specs = parse_checkpoint_specs(args.checkpoint, None if args.checkpoint else cfg.get("checkpoints"),
                                   None if args.checkpoint else cfg.get("checkpoint"))
    device = resolve_device(args.device or settings.device)
    set_deterministic()
    if clicks:
        models = load_models(specs, preset=args.preset or cfg.get("preset"), device=str(device))
        for model in models.values():
            model.to(device)
        engine = LesionEngine(models, settings, device)
        result = engine.run(ct, clicks, case=args.case)
    else:
        import numpy as np

        models = {}
        result = LesionResult(np.zeros(ct.geometry.shape_zyx, np.uint8), [], {})
        log.info("no lesion clicks for this case: writing an empty lesion map")
    compute = {"device_type": device.type, "bf16_autocast": bool(device.type == "cuda" and settings.amp_bf16)}
    sidecar = write_lesions(args.output, result, ct.geometry, case=args.case, models=models, settings=settings,
                            labels=labels, extra={"compute": compute})
    for rec in sidecar["lesions"]:
        for note in rec["notes"]:
            log.warning("lesion %d: %s", rec["lesion_id"], note)
    log.info("%d lesion(s), %d reaching the patch border, %.1f s on %s -> %s", sidecar["n_lesions"],
             sidecar["n_touching_patch_border"], time.perf_counter() - t0, device, args.output)
    return 0
