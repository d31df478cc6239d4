"""``ctsam train``: train or fine-tune the promptable network on (CT, label map) pairs.

    ctsam train --data TRAIN.tsv --variant micro --out runs/r1 [--steps 1000] [--batch-size 6]
    ctsam train --data TRAIN.tsv --init ckpt_1000/params.pth --finetune decoder --out runs/ft
    torchrun --nproc-per-node 4 -m ctsam train ...     (or srun, see workflow/slurm/train.sbatch)

TRAIN.tsv columns: ``ct`` (NIfTI or DICOM folder), ``labels`` (ground-truth label map), optional
``case_id``. Settings come from the config's ``train`` section; flags override. Rerunning with the
same ``--out`` resumes from the latest checkpoint exactly (``--restart`` starts over).
"""

from __future__ import annotations

import argparse

HELP = "train or fine-tune the promptable network (CT-SAM3D recipe; DDP via torchrun or srun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="TSV of cases (columns ct, labels[, case_id])")
    parser.add_argument("--val-data", default=None, help="TSV of validation cases (default: none)")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, model.safetensors)")
    parser.add_argument("--variant", default=None, help="model variant when training from scratch: micro | restv2_tiny")
    parser.add_argument("--init", default=None,
                        help="initial weights: published params.pth, a ctsam .safetensors or builtin:NAME")
    parser.add_argument("--finetune", choices=["all", "decoder"], default=None,
                        help="train all weights, or only the decoder (frozen encoder)")
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
    parser.add_argument("--label-column", default=None,
                        help="label column of the TSV (default: labels, truth_labels, label or truth)")
    parser.add_argument("--cache-dir", default=None, help="model-frame cache (default RUN_DIR/cache)")
    parser.add_argument("--restart", action="store_true", help="ignore existing checkpoints in --out")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only resample the cases into the model-frame cache, then exit")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from ctsam.config import load_config
    from ctsam.training.data import PatchSampler, prepare_case, read_table
    from ctsam.training.demo import git_commit
    from ctsam.training.loop import Trainer, TrainSettings, build_or_load_model

    log = logging.getLogger(__name__)
    config = load_config(args.config)
    settings = TrainSettings.from_config(
        config.get("train") or {}, variant=args.variant, init=args.init, finetune=args.finetune, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps, rounds=args.rounds, seed=args.seed,
        cpp=args.cpp, checkpoint_every=args.checkpoint_every, val_every=args.val_every, device=args.device,
        threads=args.threads, max_minutes=args.max_minutes)
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    model = build_or_load_model(settings)
    from ctsam.model import wrap_module

    spec = wrap_module(model).input_spec
    spacing = float(spec.spacing_zyx_mm[0])
    rows = read_table(args.data, ct_column=args.ct_column, label_column=args.label_column)
    cases = [prepare_case(r, spacing_mm=spacing, cache_dir=cache, min_voxels=settings.min_structure_voxels)
             for r in rows]
    if args.prepare_only:
        log.info("prepared %d cases in %s", len(cases), cache)
        return 0
    sampler = PatchSampler(cases, hu_window=spec.hu_window, seed=settings.seed, augment=settings.augment,
                           neighbour_stride=settings.cpp_stride_voxels if settings.cpp else 0,
                           coarse_prompt_probability=settings.coarse_prompt_probability)
    val_sampler = None
    if args.val_data:
        vrows = read_table(args.val_data, ct_column=args.ct_column, label_column=args.label_column)
        val_sampler = PatchSampler([prepare_case(r, spacing_mm=spacing, cache_dir=cache) for r in vrows],
                                   hu_window=spec.hu_window, seed=settings.seed + 1, augment=None)
    provenance = {"command": "ctsam train " + " ".join(f"{k}={v}" for k, v in sorted(vars(args).items())
                                                        if v not in (None, False) and not k.startswith("_")),
                  "data": str(Path(args.data).name), "cases": len(cases), "git_commit": git_commit(),
                  "init": settings.init}
    trainer = Trainer(settings, sampler, out, val_sampler=val_sampler, provenance=provenance, model=model)
    try:
        summary = trainer.run(resume=not args.restart)
        if trainer.dist.is_main:
            path = trainer.export(out / "model.safetensors", {"final": summary})
            log.info("trained %d steps in %.0f s -> %s", summary["steps_done"], summary["wall_s"], path)
    finally:
        trainer.close()
    return 0
