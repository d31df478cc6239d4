"""``ctsam train-demo``: train the shipped demo model (micro variant on demo phantoms, CPU, <= 30 min).

    ctsam train-demo --out runs/demo_micro --install
    ctsam train-demo --model sam3d_adapter --out runs/demo_lesion --install   (builtin:demo_lesion)

Writes training/validation/held-out phantoms (the generator of ``ctsam demo-cohort``) as NIfTI under
``RUN_DIR/data``, trains (``RUN_DIR/metrics.jsonl``, checkpoints; rerunning resumes), exports
``RUN_DIR/model.safetensors`` with its provenance, evaluates it on held-out phantoms (``RUN_DIR/eval``)
and, with ``--install``, copies it to ``ctsam/resources/models/demo_micro.safetensors``.

``--model sam3d_adapter`` trains the demo lesion model instead (tiny32 3DSAM-adapter on the phantoms'
planted tumours, ~25 min on 2 CPU cores; :mod:`ctsam.training.lesion_demo`, docs/lesions_training.md),
evaluates one-click lesion Dice on held-out phantoms against region growing, and with ``--install``
writes ``ctsam/resources/models/demo_lesion.safetensors`` + ``.json``.
"""

from __future__ import annotations

import argparse
import sys

HELP = (
    "train a shipped demo model on synthetic demo phantoms on CPU: micro CT-SAM3D (default) or the "
    "one-click lesion model (--model sam3d_adapter)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        choices=["ctsam3d", "sam3d_adapter"],
        default="ctsam3d",
        help="ctsam3d: builtin:demo_micro (default); sam3d_adapter: builtin:demo_lesion",
    )
    parser.add_argument("--out", required=True, help="run folder (data, checkpoints, metrics, model, eval)")
    parser.add_argument(
        "--train-cases", type=int, default=None, help="training phantoms (default 8; 32 for sam3d_adapter)"
    )
    parser.add_argument("--train-seed", type=int, default=1, help="cohort seed of the training phantoms (default 1)")
    parser.add_argument(
        "--heldout-cases",
        type=int,
        default=None,
        help="held-out phantoms of cohort seed 0, the workflow's demo cohort (default 2; 3 for sam3d_adapter)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimisation steps (default 1200 for ctsam3d: 22-26 min measured on 2 idle CPU cores; "
        "8000 for sam3d_adapter: about 25 min)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop training after this many minutes, checkpointing first (default 27; 60 for sam3d_adapter)",
    )
    parser.add_argument(
        "--init",
        default=None,
        help="sam3d_adapter: continue from an earlier stage's model file instead of random weights",
    )
    parser.add_argument(
        "--lambda-ce",
        type=float,
        default=0.5,
        help="sam3d_adapter: cross-entropy weight of the Dice-CE loss (Dice gets 1 - it; published 0.5)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="skip training: evaluate RUN_DIR/model.safetensors and record the figures in it",
    )
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="sam3d_adapter: no training; choose the foreground logit offset of --init on the training phantoms "
        "and evaluate it on the held-out ones (docs/lesions_training.md)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="copy the model to ctsam/resources/models/demo_micro.safetensors (builtin:demo_micro)",
    )


def run(args: argparse.Namespace) -> int:
    from ctsam.training.lesion_demo import LESION_MAX_MINUTES, LESION_STEPS, LESION_TRAIN_CASES

    if args.model == "sam3d_adapter" and args.calibrate_only:
        from ctsam.training.lesion_demo import calibrate_lesion_demo, format_lesion_summary

        if not args.init:
            sys.stderr.write("ctsam train-demo: --calibrate-only needs --init MODEL (e.g. builtin:demo_lesion)\n")
            return 2
        result = calibrate_lesion_demo(
            args.out,
            args.init,
            train_cases=args.train_cases or LESION_TRAIN_CASES,
            train_seed=args.train_seed,
            heldout_cases=args.heldout_cases or 3,
            install=args.install,
        )
        sys.stdout.write(f"chosen logit offset {result['calibration']['delta']:g}\n")
        sys.stdout.write(format_lesion_summary(result["eval"]) + "\n")
        return 0
    if args.model == "sam3d_adapter":
        from ctsam.training.lesion_demo import format_lesion_summary, train_lesion_demo

        result = train_lesion_demo(
            args.out,
            train_cases=args.train_cases or LESION_TRAIN_CASES,
            train_seed=args.train_seed,
            heldout_cases=args.heldout_cases or 3,
            steps=args.steps or LESION_STEPS,
            max_minutes=args.max_minutes if args.max_minutes is not None else LESION_MAX_MINUTES,
            threads=args.threads,
            install=args.install,
            eval_only=args.eval_only,
            init=args.init,
            lambda_ce=args.lambda_ce,
        )
        sys.stdout.write(format_lesion_summary(result["eval"]) + "\n")
        return 0
    from ctsam.config import load_config
    from ctsam.training.demo import train_demo
    from ctsam.training.evaluate import format_summary

    result = train_demo(
        args.out,
        train_cases=args.train_cases or 8,
        train_seed=args.train_seed,
        heldout_cases=args.heldout_cases or 2,
        steps=args.steps or 1200,
        max_minutes=args.max_minutes if args.max_minutes is not None else 27.0,
        threads=args.threads,
        install=args.install,
        evaluate_heldout=not args.no_eval,
        eval_only=args.eval_only,
        config=load_config(args.config),
    )
    if "eval" in result:
        sys.stdout.write(format_summary(result["eval"]) + "\n")
    return 0
