"""``ctsam train-demo``: train the shipped demo model (micro variant on demo phantoms, CPU, <= 30 min).

    ctsam train-demo --out runs/demo_micro --install

Writes training/validation/held-out phantoms (the generator of ``ctsam demo-cohort``) as NIfTI under
``RUN_DIR/data``, trains (``RUN_DIR/metrics.jsonl``, checkpoints; rerunning resumes), exports
``RUN_DIR/model.safetensors`` with its provenance, evaluates it on held-out phantoms (``RUN_DIR/eval``)
and, with ``--install``, copies it to ``ctsam/resources/models/demo_micro.safetensors``.
"""

from __future__ import annotations

import argparse
import sys

HELP = "train the shipped demo model (micro variant) on synthetic demo phantoms on CPU"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run folder (data, checkpoints, metrics, model, eval)")
    parser.add_argument("--train-cases", type=int, default=8, help="training phantoms (default 8)")
    parser.add_argument("--train-seed", type=int, default=1, help="cohort seed of the training phantoms (default 1)")
    parser.add_argument("--heldout-cases", type=int, default=2,
                        help="held-out phantoms of cohort seed 0, the workflow's demo cohort (default 2)")
    parser.add_argument("--steps", type=int, default=1200, help="optimisation steps (default 1200: 22-26 min measured on 2 idle CPU cores)")
    parser.add_argument("--max-minutes", type=float, default=27.0,
                        help="stop training after this many minutes, checkpointing first (default 27)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    parser.add_argument("--eval-only", action="store_true",
                        help="skip training: evaluate RUN_DIR/model.safetensors and record the figures in it")
    parser.add_argument("--install", action="store_true",
                        help="copy the model to ctsam/resources/models/demo_micro.safetensors (builtin:demo_micro)")


def run(args: argparse.Namespace) -> int:
    from ctsam.config import load_config
    from ctsam.training.demo import train_demo
    from ctsam.training.evaluate import format_summary

    result = train_demo(args.out, train_cases=args.train_cases, train_seed=args.train_seed,
                        heldout_cases=args.heldout_cases, steps=args.steps, max_minutes=args.max_minutes,
                        threads=args.threads, install=args.install, evaluate_heldout=not args.no_eval, eval_only=args.eval_only,
                        config=load_config(args.config))
    if "eval" in result:
        sys.stdout.write(format_summary(result["eval"]) + "\n")
    return 0
