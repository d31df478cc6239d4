"""``ctsam train``: train or fine-tune the promptable network on (CT, label map) pairs.

    ctsam train --data TRAIN.tsv --variant micro --out runs/r1 [--steps 1000] [--batch-size 6]
    ctsam train --data TRAIN.tsv --init ckpt_1000/params.pth --finetune decoder --out runs/ft
    torchrun --nproc-per-node 4 -m ctsam train ...     (or srun, see workflow/slurm/train.sbatch)

One-click lesion models (3DSAM-adapter; parameter-efficient fine-tuning, docs/lesions_training.md)::

    # from a published checkpoint:
    ctsam train --model sam3d_adapter --init kits.pth.tar --preset kits --data LESIONS.tsv --out runs/lesion
    # from SAM ViT-B image-encoder weights (the 3D encoder's new parts start random):
    ctsam train --model sam3d_adapter --sam-checkpoint sam_vit_b_01ec64.pth --preset kits --data LESIONS.tsv ...
    # add --val-data HELDOUT.tsv for one-click validation Dice; --recipe adapters (default) | decoder | full

    LESIONS.tsv: the same columns; ``labels`` is a lesion label map (non-zero = lesion, each connected
    component one lesion). Only the published recipe's parameters train (``--recipe full``: every
    tensor); trainable/total counts are printed and recorded. Defaults: the published settings (batch 1,
    AdamW 4e-4, no weight decay, linear decay to 0.01x, Dice-CE 0.5/0.5, clip 1.0, 10 lesion + 20
    random points per patch). Validation: one-click Dice on --val-data lesions against region growing.

TRAIN.tsv columns: ``ct`` (NIfTI or DICOM folder), ``labels`` (ground-truth label map), optional
``case_id``. Settings come from the config's ``train`` section; flags override. Rerunning with the
same ``--out`` resumes from the latest checkpoint exactly (``--restart`` starts over).
"""

from __future__ import annotations

import argparse

HELP = (
    "train or fine-tune the promptable network (CT-SAM3D recipe), or a one-click lesion model "
    "(--model sam3d_adapter, 3DSAM-adapter recipe); DDP via torchrun or srun"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model",
        choices=["ctsam3d", "sam3d_adapter"],
        default="ctsam3d",
        help="ctsam3d (default): the anatomy network; sam3d_adapter: a one-click lesion model "
        "fine-tuned with the 3DSAM-adapter recipe",
    )
    parser.add_argument(
        "--recipe",
        choices=["adapters", "decoder", "full"],
        default=None,
        help="sam3d_adapter: which parameters train: 'adapters' (published: adapters, norms, depth "
        "embedding, necks, prompt encoders, decoder; SAM weights frozen), 'decoder' (prompt "
        "encoders and decoder) or 'full' (every tensor)",
    )
    parser.add_argument(
        "--preset",
        default=None,
        help="sam3d_adapter: input convention of a published checkpoint (kits | lits | msd_pancreas "
        "| msd_colon: HU window and z-score)",
    )
    parser.add_argument(
        "--sam-checkpoint",
        default=None,
        help="sam3d_adapter: start from Meta's SAM ViT-B weights (sam_vit_b_01ec64.pth) mapped to 3D",
    )
    parser.add_argument(
        "--lr-end-factor",
        type=float,
        default=None,
        help="sam3d_adapter: final learning-rate factor of the linear decay (published 0.01)",
    )
    parser.add_argument("--data", required=True, help="TSV of cases (columns ct, labels[, case_id])")
    parser.add_argument("--val-data", default=None, help="TSV of validation cases (default: none)")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, model.safetensors)")
    parser.add_argument(
        "--variant",
        default=None,
        help="model variant when training from scratch: micro | restv2_tiny (ctsam3d); vit_b | tiny (sam3d_adapter)",
    )
    parser.add_argument(
        "--init",
        default=None,
        help="initial weights: published params.pth (ctsam3d) or 3DSAM-adapter checkpoint "
        "(sam3d_adapter, with --preset), a ctsam .safetensors or builtin:NAME",
    )
    parser.add_argument(
        "--finetune",
        choices=["all", "decoder"],
        default=None,
        help="train all weights, or only the decoder (frozen encoder)",
    )
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (split evenly across ranks)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps")
    parser.add_argument("--rounds", type=int, default=None, help="click rounds per step (CT-SAM3D: 5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the weights and the data")
    parser.add_argument("--cpp", action="store_true", default=None, help="also train the cross-patch network")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    parser.add_argument("--val-every", type=int, default=None, help="steps between validations")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    parser.add_argument("--ct-column", default=None, help="CT column of the TSV (default: ct, path or image)")
    parser.add_argument(
        "--label-column", default=None, help="label column of the TSV (default: labels, truth_labels, label or truth)"
    )
    parser.add_argument("--cache-dir", default=None, help="model-frame cache (default RUN_DIR/cache)")
    parser.add_argument("--restart", action="store_true", help="ignore existing checkpoints in --out")
    parser.add_argument(
        "--prepare-only", action="store_true", help="only resample the cases into the model-frame cache, then exit"
    )


def run(args: argparse.Namespace) -> int:
    if args.model == "sam3d_adapter":
        return run_lesion(args)
    import logging
    from pathlib import Path

    from ctsam.config import load_config
    from ctsam.training.data import PatchSampler, prepare_case, read_table
    from ctsam.training.demo import git_commit
    from ctsam.training.loop import Trainer, TrainSettings, build_or_load_model

    log = logging.getLogger(__name__)
    config = load_config(args.config)
    settings = TrainSettings.from_config(
        config.get("train") or {},
        variant=args.variant,
        init=args.init,
        finetune=args.finetune,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        rounds=args.rounds,
        seed=args.seed,
        cpp=args.cpp,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        device=args.device,
        threads=args.threads,
        max_minutes=args.max_minutes,
    )
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    model = build_or_load_model(settings)
    from ctsam.model import wrap_module

    spec = wrap_module(model).input_spec
    spacing = float(spec.spacing_zyx_mm[0])
    assert spec.hu_window is not None  # CT-SAM3D always has a window
    rows = read_table(args.data, ct_column=args.ct_column, label_column=args.label_column)
    cases = [
        prepare_case(r, spacing_mm=spacing, cache_dir=cache, min_voxels=settings.min_structure_voxels) for r in rows
    ]
    if args.prepare_only:
        log.info("prepared %d cases in %s", len(cases), cache)
        return 0
    sampler = PatchSampler(
        cases,
        hu_window=spec.hu_window,
        seed=settings.seed,
        augment=settings.augment,
        neighbour_stride=settings.cpp_stride_voxels if settings.cpp else 0,
        coarse_prompt_probability=settings.coarse_prompt_probability,
    )
    val_sampler = None
    if args.val_data:
        vrows = read_table(args.val_data, ct_column=args.ct_column, label_column=args.label_column)
        val_sampler = PatchSampler(
            [prepare_case(r, spacing_mm=spacing, cache_dir=cache) for r in vrows],
            hu_window=spec.hu_window,
            seed=settings.seed + 1,
            augment=None,
        )
    provenance = {
        "command": "ctsam train "
        + " ".join(
            f"{k}={v}" for k, v in sorted(vars(args).items()) if v not in (None, False) and not k.startswith("_")
        ),
        "data": str(Path(args.data).name),
        "cases": len(cases),
        "git_commit": git_commit(),
        "init": settings.init,
    }
    trainer = Trainer(settings, sampler, out, val_sampler=val_sampler, provenance=provenance, model=model)
    try:
        summary = trainer.run(resume=not args.restart)
        if trainer.dist.is_main:
            path = trainer.export(out / "model.safetensors", {"final": summary})
            log.info("trained %d steps in %.0f s -> %s", summary["steps_done"], summary["wall_s"], path)
    finally:
        trainer.close()
    return 0


def run_lesion(args: argparse.Namespace) -> int:
    """``--model sam3d_adapter``: parameter-efficient fine-tuning of a one-click lesion model."""
    import logging
    import sys
    from pathlib import Path

    from ctsam.config import load_config
    from ctsam.errors import ConfigError
    from ctsam.training.data import read_table
    from ctsam.training.demo import git_commit
    from ctsam.training.lesion_data import LesionPatchSampler, prepare_lesion_case
    from ctsam.training.lesion_loop import LesionTrainer, LesionTrainSettings, build_lesion_model

    log = logging.getLogger(__name__)
    for flag in ("finetune", "cpp", "rounds"):
        if getattr(args, flag) not in (None, False):
            raise ConfigError(
                f"--{flag} is a ctsam3d option",
                found=f"--{flag} with --model sam3d_adapter",
                fix="use --recipe adapters|decoder|full to choose what trains",
            )
    config = load_config(args.config)
    settings = LesionTrainSettings.from_config(
        config.get("train_lesion") or {},
        model=args.model,
        variant=args.variant,
        init=args.init,
        preset=args.preset,
        sam_checkpoint=args.sam_checkpoint,
        recipe=args.recipe,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        lr_end_factor=args.lr_end_factor,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        device=args.device,
        threads=args.threads,
        max_minutes=args.max_minutes,
    )
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    model, origin = build_lesion_model(settings)
    spec = model.input_spec
    spacing = spec.spacing_zyx_mm
    if max(spacing) - min(spacing) > 1e-6:
        raise ConfigError("lesion training needs an isotropic model spacing", found=str(spacing))
    rows = read_table(args.data, ct_column=args.ct_column, label_column=args.label_column)
    cases = [prepare_lesion_case(r, spacing_mm=float(spacing[0]), cache_dir=cache) for r in rows]
    if args.prepare_only:
        log.info("prepared %d cases in %s", len(cases), cache)
        return 0
    sd = spec.zscore_mean_std[1] if spec.zscore_mean_std else None
    sampler = LesionPatchSampler(
        cases,
        normalise=spec.normalise,
        zscore_sd=sd,
        patch_size_zyx=spec.patch_size_zyx,
        seed=settings.seed,
        settings=settings.sampling,
    )
    val_cases = []
    if args.val_data:
        vrows = read_table(args.val_data, ct_column=args.ct_column, label_column=args.label_column)
        val_cases = [prepare_lesion_case(r, spacing_mm=float(spacing[0]), cache_dir=cache) for r in vrows]
    provenance = {
        "command": "ctsam train "
        + " ".join(
            f"{k}={v}"
            for k, v in sorted(vars(args).items())
            if v not in (None, False) and not k.startswith("_") and k not in ("func",)
        ),
        "data": str(Path(args.data).name),
        "cases": len(cases),
        "git_commit": git_commit(),
    }
    trainer = LesionTrainer(
        settings, sampler, out, val_cases=val_cases, provenance=provenance, model=model, origin=origin
    )
    sys.stdout.write(
        f"trainable parameters: {trainer.trainable:,} of {trainer.total:,} "
        f"({100.0 * trainer.trainable / max(1, trainer.total):.2f} %), recipe {settings.recipe}\n"
    )
    try:
        summary = trainer.run(resume=not args.restart)
        if trainer.dist.is_main:
            extra = {"final": summary}
            if val_cases:
                extra["validation"] = trainer.validate()
            path = trainer.export(out / "model.safetensors", extra)
            log.info("trained %d steps in %.0f s -> %s", summary["steps_done"], summary["wall_s"], path)
    finally:
        trainer.close()
    return 0
