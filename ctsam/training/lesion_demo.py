"""The shipped demo lesion model: the ``tiny32`` 3DSAM-adapter trained on demo phantoms on CPU.

``ctsam train-demo --model sam3d_adapter --out RUN_DIR [--install]``

Data: demo phantoms with their planted liver and kidney tumours (:mod:`ctsam.demo.lesions`), written as
NIfTI (CT in HU, lesion truth with one id per lesion):

* training: cohort seed ``train_seed`` (default 1), cases 1..``train_cases`` (default 32);
* validation during training: the next case of that cohort (one random click per lesion);
* held-out evaluation: cohort seed 0, cases 1..``heldout_cases`` -- the workflow's default demo cohort
  (``workflow.demo.seed: 0``, 3 cases), so the demo runs on phantoms the model never saw.

Model and recipe: the ``tiny32`` variant (4 blocks of width 48 on 32^3 patches at 1 mm: 4-voxel tokens
and a 2-voxel decoder grid, the published ratios) with the demo's input convention (HU window -54..247
and z-score 59.5 / 55.5, the KiTS preset's numbers, which cover liver, kidney and both tumour contrasts;
output classes background / lesion). No SAM ViT weights exist for the tiny width, so it starts from
random weights and trains every tensor (``recipe: full``, the patch embedding included); the rest is
the published recipe (Dice-CE, 10 lesion + 20 random points, the published augmentation, batch 1,
AdamW without weight decay, linear decay to 0.01x) with a larger learning rate (2e-3, 10 warm-up
steps), more patches centred on a lesion (85 % instead of 2/3) and 8000 steps (about 25 min on 2 CPU
cores). Real data use ``ctsam train --model sam3d_adapter --recipe adapters`` from a published
checkpoint or SAM ViT-B instead.

Held-out evaluation (:mod:`.lesion_eval`), in the same run: one-click Dice per lesion of the model and
of the region-growing baseline, with the click of ``lesions.tsv`` (the lesion's most interior voxel,
what the demo workflow feeds ``ctsam lesions``) and with a random click in the lesion (the published
test protocol). The figures go into the model's metadata, ``RUN_DIR/provenance.json`` and, with
``--install``, ``ctsam/resources/models/demo_lesion.{safetensors,json}`` (``builtin:demo_lesion``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ctsam.model.presets import PRESETS

log = logging.getLogger(__name__)

BUILTIN_NAME = "demo_lesion"
HELDOUT_SEED = 0
#: the demo's input convention is the KiTS preset's (its HU window covers liver, kidney and both contrasts)
DEMO_HU_WINDOW = PRESETS["kits"].hu_window
DEMO_ZSCORE = (PRESETS["kits"].mean, PRESETS["kits"].sd)
DEMO_CLASSES = ("background", "lesion")
#: the published single-click Dice figures quoted for context (docs: ctsam3d.md section 3.2)
PUBLISHED_ONE_CLICK_DICE = {
    "kits21_kidney_tumour": 0.738,
    "msd_pancreas_tumour": 0.575,
    "lits17_liver_tumour": 0.566,
    "msd_colon_cancer": 0.500,
}


def demo_input_spec(patch_size_zyx):
    from ctsam.model import InputSpec

    return InputSpec(
        patch_size_zyx=tuple(patch_size_zyx),
        spacing_zyx_mm=(1.0, 1.0, 1.0),
        hu_window=DEMO_HU_WINDOW,
        zscore_mean_std=DEMO_ZSCORE,
        preset=None,
    )


DEMO_VARIANT = "tiny32"
DEMO_LR = 2e-3
#: ``ctsam train-demo --model sam3d_adapter`` defaults (the shipped run)
LESION_TRAIN_CASES = 32
LESION_STEPS = 8000
LESION_MAX_MINUTES = 60.0


def demo_settings(steps: int, max_minutes: float, threads: int, lambda_ce: float = 0.5):
    from ctsam.training.lesion_loop import LesionTrainSettings

    return LesionTrainSettings(
        model="sam3d_adapter",
        variant=DEMO_VARIANT,
        recipe="full",
        steps=steps,
        batch_size=1,
        lr=DEMO_LR,
        warmup_steps=10,
        lr_end_factor=0.01,
        positive_fraction=0.85,
        seed=42,
        lambda_dice=1.0 - lambda_ce,
        lambda_ce=lambda_ce,
        checkpoint_every=25,
        keep_checkpoints=2,
        val_every=50,
        log_every=10,
        device="cpu",
        threads=threads,
        max_minutes=max_minutes,
    )


def clicks_from_table(case, tsv: Path) -> list[tuple[int, tuple[int, ...]]]:
    """(lesion component, model-frame voxel) of each click of a ``lesions.tsv`` on a prepared case."""
    import csv

    from ctsam.refine.patching import world_to_frame_zyx

    out = []
    with open(tsv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            zyx = np.rint(world_to_frame_zyx(case.frame, [float(row["x"]), float(row["y"]), float(row["z"])]))
            zyx = tuple(int(v) for v in np.clip(zyx, 0, np.array(case.components.shape) - 1))
            comp = int(case.components[zyx])
            if comp == 0:  # the nearest model-frame voxel missed a thin lesion: take its nearest lesion voxel
                vox = np.argwhere(case.components > 0)
                comp_vox = vox[int(np.argmin(((vox - np.array(zyx)) ** 2).sum(1)))]
                zyx = tuple(int(v) for v in comp_vox)
                comp = int(case.components[zyx])
            out.append((comp, zyx))
    return out


def evaluate_heldout(model, table: Path, *, cache_dir: Path | None, seed: int) -> dict:
    """One-click Dice of ``model`` and of the baseline on the held-out phantoms (both click kinds)."""
    from ctsam.training.data import read_table
    from ctsam.training.lesion_data import prepare_lesion_case
    from ctsam.training.lesion_eval import one_click_case, random_clicks, summarise

    t0 = time.perf_counter()
    model.module.eval()
    spacing = float(model.input_spec.spacing_zyx_mm[0])
    rows_tsv: list[dict] = []
    rows_rand: list[dict] = []
    clicks_col = {}
    import csv

    with open(table, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            clicks_col[r["case_id"]] = table.parent / r["clicks"]
    for row in read_table(table):
        case = prepare_lesion_case(row, spacing_mm=spacing, cache_dir=cache_dir)
        rows_tsv += one_click_case(model, case, clicks_from_table(case, clicks_col[row.case_id]))
        rows_rand += one_click_case(model, case, random_clicks(case, seed))
    return {
        "table_click": summarise(rows_tsv),
        "random_click": summarise(rows_rand),
        "per_lesion_table_click": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows_tsv
        ],
        "cases": len(clicks_col),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def train_lesion_demo(
    out_dir: str | os.PathLike[str],
    *,
    train_cases: int = LESION_TRAIN_CASES,
    train_seed: int = 1,
    heldout_cases: int = 3,
    steps: int = LESION_STEPS,
    max_minutes: float = LESION_MAX_MINUTES,
    threads: int = 0,
    install: bool = False,
    eval_only: bool = False,
    init: str | None = None,
    lambda_ce: float = 0.5,
) -> dict:
    """Generate data, train, evaluate on held-out phantoms, export (and optionally install) the demo lesion model.

    ``init``: continue from an earlier stage's model file (e.g. ``RUN0/checkpoints/step_000050/model.safetensors``)
    instead of random weights; its sha256 becomes ``trained_from`` and its training record is kept as
    ``previous_stage``.
    """
    import torch

    from ctsam.io.atomic import atomic_write_json
    from ctsam.model import build_model, load_model, save_model
    from ctsam.training.data import read_table
    from ctsam.training.demo import git_commit, write_phantom_cases
    from ctsam.training.lesion_data import LesionPatchSampler, prepare_lesion_case
    from ctsam.training.lesion_loop import LesionTrainer

    t0 = time.perf_counter()
    out = Path(out_dir)
    data = out / "data"
    train_tsv = write_phantom_cases(
        data / "train", seed=train_seed, indices=list(range(1, train_cases + 1)), lesions=True
    )
    val_tsv = write_phantom_cases(data / "val", seed=train_seed, indices=[train_cases + 1], lesions=True)
    heldout_tsv = write_phantom_cases(
        data / "heldout", seed=HELDOUT_SEED, indices=list(range(1, heldout_cases + 1)), lesions=True
    )
    t_data = time.perf_counter() - t0
    settings = demo_settings(steps, max_minutes, threads, lambda_ce)
    cache = out / "cache"
    model_path = out / "model.safetensors"
    result: dict = {"model": str(model_path)}
    if not eval_only:
        torch.manual_seed(settings.seed)
        previous = None
        if init:
            from ctsam.training.lesion_loop import file_sha256

            model = load_model(init)
            origin: dict[str, str | None] = {
                "source": "init",
                "init": Path(init).name,
                "trained_from": file_sha256(init),
            }
            prev = dict(model.metadata.get("training") or {})
            previous = {
                k: prev.get(k)
                for k in ("settings", "steps_done", "parameters", "data", "origin", "final_losses", "previous_stage")
            }
            previous["trained_from"] = model.metadata.get("trained_from")
        else:
            model = build_model(settings.model, settings.variant)
            origin = {"source": "random", "trained_from": None}
        model.with_input_spec(  # type: ignore[attr-defined]  # one-click (sam3d_adapter) models
            demo_input_spec(model.input_spec.patch_size_zyx), output_classes=DEMO_CLASSES
        )
        spec = model.input_spec
        spacing = float(spec.spacing_zyx_mm[0])
        cases = [prepare_lesion_case(r, spacing_mm=spacing, cache_dir=cache) for r in read_table(train_tsv)]
        val_cases = [prepare_lesion_case(r, spacing_mm=spacing, cache_dir=cache) for r in read_table(val_tsv)]
        sampler = LesionPatchSampler(
            cases,
            normalise=spec.normalise,
            zscore_sd=DEMO_ZSCORE[1],
            patch_size_zyx=spec.patch_size_zyx,
            seed=settings.seed,
            settings=settings.sampling,
        )
        provenance = {
            "command": " ".join(["ctsam", *sys.argv[1:]])
            if sys.argv and "ctsam" in Path(sys.argv[0]).name
            else (
                f"ctsam train-demo --model sam3d_adapter --out {out.name} --train-cases {train_cases} "
                f"--steps {steps} --max-minutes {max_minutes:g}"
            ),
            "data": {
                "generator": "ctsam.demo.phantom + ctsam.demo.lesions (ctsam demo-cohort phantoms)",
                "train_seed": train_seed,
                "train_cases": train_cases,
                "train_lesions": int(sum(c.n_lesions for c in cases)),
                "val": f"seed {train_seed} case {train_cases + 1}",
                "heldout_seed": HELDOUT_SEED,
                "heldout_cases": heldout_cases,
            },
            "git_commit": git_commit(),
        }
        if previous is not None:
            provenance["previous_stage"] = previous
        trainer = LesionTrainer(
            settings, sampler, out, val_cases=val_cases, provenance=provenance, model=model, origin=origin
        )
        summary = trainer.run()
        extra = {
            "wall_s_train": summary["wall_s"],
            "stopped_early": summary["stopped_early"],
            "final_losses": _final_losses(out / "metrics.jsonl"),
            "wall_s_data": round(t_data, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        trainer.export(model_path, extra)
        trainer.close()
        result["train"] = summary
    model = load_model(model_path)
    ev = evaluate_heldout(model, heldout_tsv, cache_dir=cache, seed=42)
    ev["published_one_click_dice_for_context"] = PUBLISHED_ONE_CLICK_DICE
    meta = dict(model.metadata)
    training = dict(meta.get("training") or {})
    training["heldout_eval"] = ev
    save_model(
        model,
        model_path,
        metadata={"source": meta.get("source"), "trained_from": meta.get("trained_from"), "training": training},
    )
    atomic_write_json(out / "provenance.json", training)
    result["eval"] = ev
    log.info(
        "held-out one-click Dice (lesions.tsv click): model %.3f, region growing %.3f on %d lesions",
        ev["table_click"]["dice_mean"],
        ev["table_click"]["baseline_dice_mean"],
        ev["table_click"]["lesions"],
    )
    if install:
        _install(model_path)
    return result


#: logit offsets tried by :func:`calibrate_lesion_demo` (added to the foreground logit)
CALIBRATION_GRID = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def set_calibration(model, delta: float, **record) -> None:
    """Set the foreground logit offset of a one-click model (``metadata["calibration"]``)."""
    model.update_metadata(calibration={"delta": float(delta), **record})


def calibrate_lesion_demo(
    out_dir: str | os.PathLike[str],
    init: str,
    *,
    grid: tuple[float, ...] = CALIBRATION_GRID,
    train_cases: int = LESION_TRAIN_CASES,
    train_seed: int = 1,
    heldout_cases: int = 3,
    install: bool = False,
) -> dict:
    """Post-hoc calibration of the foreground logit offset of a trained demo lesion model.

    The decoder's last conv has no bias, so the offset ``delta`` is applied to the foreground logit
    after it (the same as a class-1 bias: the final upsampling is linear). ``delta`` is chosen on the
    *training* phantoms only (mean one-click Dice with the ``lesions.tsv`` clicks, the smallest
    ``delta`` on ties); the held-out phantoms are evaluated once with ``delta = 0`` and once with the
    chosen ``delta``, each next to the region-growing baseline. Writes ``RUN_DIR/model.safetensors``
    with a ``calibration`` record (and installs it as ``builtin:demo_lesion`` with ``install``).
    """
    from ctsam.io.atomic import atomic_write_json
    from ctsam.model import load_model, save_model
    from ctsam.training.demo import write_phantom_cases
    from ctsam.training.lesion_loop import file_sha256

    t0 = time.perf_counter()
    out = Path(out_dir)
    data = out / "data"
    train_tsv = write_phantom_cases(
        data / "train", seed=train_seed, indices=list(range(1, train_cases + 1)), lesions=True
    )
    heldout_tsv = write_phantom_cases(
        data / "heldout", seed=HELDOUT_SEED, indices=list(range(1, heldout_cases + 1)), lesions=True
    )
    cache = out / "cache"
    model = load_model(init)
    init_file = (
        Path(__file__).resolve().parents[1] / "resources" / "models" / f"{init.split(':', 1)[1]}.safetensors"
        if init.startswith("builtin:")
        else Path(init)
    )
    previous_sha = file_sha256(init_file)
    previous_cal = model.metadata.get("calibration")
    per_delta = []
    for delta in grid:
        set_calibration(model, delta)
        ev = evaluate_heldout(model, train_tsv, cache_dir=cache, seed=42)
        per_delta.append(
            {
                "delta": float(delta),
                "train_dice_mean_table_click": round(ev["table_click"]["dice_mean"], 4),
                "train_dice_mean_random_click": round(ev["random_click"]["dice_mean"], 4),
            }
        )
        log.info("delta %.3f: training one-click Dice %.3f", delta, ev["table_click"]["dice_mean"])
    best = max(per_delta, key=lambda r: (r["train_dice_mean_table_click"], -r["delta"]))
    set_calibration(model, 0.0)
    before = evaluate_heldout(model, heldout_tsv, cache_dir=cache, seed=42)
    set_calibration(model, best["delta"])
    after = evaluate_heldout(model, heldout_tsv, cache_dir=cache, seed=42)
    after["published_one_click_dice_for_context"] = PUBLISHED_ONE_CLICK_DICE
    record = {
        "method": "foreground logit offset (a class-1 bias after the decoder's last, bias-free conv), "
        "chosen by mean one-click Dice (lesions.tsv clicks) on the training phantoms only",
        "grid": per_delta,
        "selection_data": f"cohort seed {train_seed}, cases 1..{train_cases}",
        "heldout_uncalibrated": {k: before[k] for k in ("table_click", "random_click")},
        "heldout_calibrated": {k: after[k] for k in ("table_click", "random_click")},
        "previous_sha256": previous_sha,
        "previous_calibration": previous_cal,
        "command": f"ctsam train-demo --model sam3d_adapter --calibrate-only --init {init} --out {out.name}",
    }
    set_calibration(model, best["delta"], **record)
    meta = dict(model.metadata)
    training = dict(meta.get("training") or {})
    training["heldout_eval"] = after
    model.update_metadata(training=training)
    model_path = out / "model.safetensors"
    save_model(model, model_path)
    atomic_write_json(out / "calibration.json", model.metadata["calibration"])
    log.info(
        "calibrated delta %.3f: held-out one-click Dice %.3f -> %.3f (region growing %.3f) in %.0f s",
        best["delta"],
        before["table_click"]["dice_mean"],
        after["table_click"]["dice_mean"],
        after["table_click"]["baseline_dice_mean"],
        time.perf_counter() - t0,
    )
    if install:
        _install(model_path)
    return {"model": str(model_path), "eval": after, "calibration": model.metadata["calibration"]}


def _install(model_path: Path) -> None:
    from ctsam.training.demo import builtin_models_dir

    dest = builtin_models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, dest / f"{BUILTIN_NAME}.safetensors")
    shutil.copyfile(model_path.with_suffix(".json"), dest / f"{BUILTIN_NAME}.json")
    log.info("installed %s as builtin:%s", model_path, BUILTIN_NAME)


def format_lesion_summary(ev: dict) -> str:
    lines = ["one-click lesion Dice on held-out phantoms (mean / median over lesions):"]
    for key, what in (("table_click", "click of lesions.tsv"), ("random_click", "random click in the lesion")):
        s = ev[key]
        lines.append(
            f"  {what:28s} model {s['dice_mean']:.3f} / {s['dice_median']:.3f}   region growing "
            f"{s['baseline_dice_mean']:.3f} / {s['baseline_dice_median']:.3f}   ({s['lesions']} lesions)"
        )
    return "\n".join(lines)


def _final_losses(metrics_path: Path) -> dict:
    import json

    recs = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    train = [r for r in recs if r.get("kind") == "train"]
    val = [r for r in recs if r.get("kind") == "val"]
    out: dict = {}
    if train:
        out.update(
            step=train[-1]["step"],
            first_loss_mean=round(float(train[0]["loss_mean"]), 4),
            loss_mean_last_logs=round(float(np.mean([t["loss_mean"] for t in train[-5:]])), 4),
            train_dice_last_logs=round(float(np.mean([t["train_dice"] for t in train[-5:]])), 4),
        )
    if val:
        out["val"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in val[-1].items() if k != "kind"}
    return out
