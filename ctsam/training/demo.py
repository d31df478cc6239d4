"""The shipped demo model: the ``micro`` variant trained on demo phantoms on CPU (``ctsam train-demo``).

Data: the phantoms of ``ctsam demo-cohort`` (case ``k`` of cohort seed ``S`` is drawn from
``default_rng([S, k])`` by :mod:`ctsam.demo.phantom`, exactly as :func:`ctsam.demo.cohort.write_case`
draws it), written as NIfTI (CT in HU, ground truth, coarse labels) so training needs no DICOM decoding:

* training: cohort seed ``train_seed`` (default 1), cases 1..``train_cases``;
* validation during training: the next case of that cohort;
* held-out evaluation: cohort seed 0, cases 1..``heldout_cases`` -- the default demo cohort of the
  workflow (``workflow.demo.seed: 0``), so the demo runs on phantoms the model never saw.

The run writes ``RUN_DIR/model.safetensors`` with its provenance (command, data seeds, steps, git
commit, final losses, held-out Dice) in the header and the JSON sidecar; ``--install`` copies it to
``ctsam/resources/models/demo_micro.safetensors`` (``builtin:demo_micro``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BUILTIN_NAME = "demo_micro"
HELDOUT_SEED = 0


def builtin_models_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "resources" / "models"


def write_phantom_cases(folder: Path, *, seed: int, indices: list[int], lesions: bool = False) -> Path:
    """Write demo phantoms ``(seed, k)`` as NIfTI into ``folder`` plus ``cases.tsv``; returns the TSV.

    Anatomy (default): columns ``ct, labels, coarse`` (CT, truth, coarse labels). ``lesions=True``: the
    phantoms with their planted tumours, columns ``ct, labels, clicks`` (CT, lesion truth, lesions.tsv).
    A case already written is kept (its last file marks it complete).
    """
    from ctsam.demo.lesions import lesion_rng, lesions_tsv_text
    from ctsam.demo.phantom import draw_spec, make_phantom
    from ctsam.io.atomic import atomic_write_text
    from ctsam.io.image import write_ct, write_labelmap

    names = (
        ("ct.nii.gz", "lesions_truth.nii.gz", "lesions.tsv")
        if lesions
        else ("ct.nii.gz", "truth.nii.gz", "coarse.nii.gz")
    )
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["case_id\tct\tlabels\t" + ("clicks" if lesions else "coarse")]
    for k in indices:
        case = f"demo-s{seed}-{k:03d}"
        d = folder / case
        if not (d / names[-1]).is_file():
            rng = np.random.default_rng([int(seed), int(k)])
            spec = draw_spec(rng)
            ph = make_phantom(spec, rng, lesion_rng=lesion_rng(seed, k)) if lesions else make_phantom(spec, rng)
            d.mkdir(parents=True, exist_ok=True)
            write_ct(d / names[0], ph.ct)
            if lesions:
                assert ph.lesion_truth is not None
                write_labelmap(d / names[1], ph.lesion_truth)
                atomic_write_text(d / names[2], lesions_tsv_text(ph.lesions))
            else:
                write_labelmap(d / names[1], ph.truth)
                write_labelmap(d / names[2], ph.coarse)
        lines.append("\t".join([case, *(f"{case}/{n}" for n in names)]))
    tsv = folder / "cases.tsv"
    atomic_write_text(tsv, "\n".join(lines) + "\n")
    return tsv


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def demo_settings(steps: int, max_minutes: float, threads: int):
    """Training settings of the demo model (CT-SAM3D recipe, scaled to a few hundred CPU steps)."""
    from ctsam.training.loop import TrainSettings

    return TrainSettings(
        variant="micro",
        steps=steps,
        batch_size=2,
        lr=2e-3,
        weight_decay=1e-4,
        warmup_steps=10,
        lr_decay_at=0.8,
        lr_decay_factor=0.1,
        rounds=3,
        seed=42,
        quality_weight=0.1,
        cpp=False,
        coarse_prompt_probability=0.75,
        checkpoint_every=50,
        keep_checkpoints=2,
        val_every=100,
        val_samples=8,
        log_every=10,
        device="cpu",
        threads=threads,
        max_minutes=max_minutes,
    )


def train_demo(
    out_dir: str | os.PathLike[str],
    *,
    train_cases: int = 8,
    train_seed: int = 1,
    heldout_cases: int = 2,
    steps: int = 1200,
    max_minutes: float = 27.0,
    threads: int = 0,
    install: bool = False,
    evaluate_heldout: bool = True,
    eval_only: bool = False,
    config: dict | None = None,
) -> dict:
    """Generate data, train, evaluate on held-out phantoms, export (and optionally install) the demo model."""
    from ctsam.training.data import PatchSampler, prepare_case, read_table
    from ctsam.training.loop import Trainer

    t0 = time.perf_counter()
    out = Path(out_dir)
    data = out / "data"
    train_tsv = write_phantom_cases(data / "train", seed=train_seed, indices=list(range(1, train_cases + 1)))
    val_tsv = write_phantom_cases(data / "val", seed=train_seed, indices=[train_cases + 1])
    heldout_tsv = write_phantom_cases(data / "heldout", seed=HELDOUT_SEED, indices=list(range(1, heldout_cases + 1)))
    t_data = time.perf_counter() - t0
    settings = demo_settings(steps, max_minutes, threads)
    cache = out / "cache"
    cases = [prepare_case(r, spacing_mm=settings.spacing_mm, cache_dir=cache) for r in read_table(train_tsv)]
    val_cases = [prepare_case(r, spacing_mm=settings.spacing_mm, cache_dir=cache) for r in read_table(val_tsv)]
    import torch

    from ctsam.model import build_model

    with torch.device("meta"):
        hu_window = build_model("ctsam3d", "micro").input_spec.hu_window
    assert hu_window is not None  # CT-SAM3D always has a window
    sampler = PatchSampler(
        cases,
        hu_window=hu_window,
        seed=settings.seed,
        augment=settings.augment,
        coarse_prompt_probability=settings.coarse_prompt_probability,
    )
    val_sampler = PatchSampler(val_cases, hu_window=hu_window, seed=settings.seed + 1, augment=None)
    provenance = {
        "command": " ".join(["ctsam", *sys.argv[1:]])
        if sys.argv and "ctsam" in Path(sys.argv[0]).name
        else f"ctsam train-demo --out {out} --steps {steps} --max-minutes {max_minutes}",
        "data": {
            "generator": "ctsam.demo.phantom (ctsam demo-cohort phantoms)",
            "train_seed": train_seed,
            "train_cases": train_cases,
            "val": f"seed {train_seed} case {train_cases + 1}",
            "heldout_seed": HELDOUT_SEED,
            "heldout_cases": heldout_cases,
        },
        "git_commit": git_commit(),
    }
    model_path = out / "model.safetensors"
    result: dict = {"model": str(model_path)}
    if not eval_only:
        import torch

        trainer = Trainer(settings, sampler, out, val_sampler=val_sampler, provenance=provenance)
        summary = trainer.run()
        final = _final_losses(out / "metrics.jsonl")
        extra = {
            "wall_s_train": summary["wall_s"],
            "stopped_early": summary["stopped_early"],
            "final_losses": final,
            "wall_s_data": round(t_data, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        trainer.export(model_path, extra)
        trainer.close()
        result["train"] = summary
    if evaluate_heldout:
        result["eval"] = evaluate_and_record(
            model_path,
            heldout_tsv,
            out / "eval",
            config=config,
            cache_dir=cache,
            val_sampler=val_sampler,
            seed=settings.seed,
        )
    if install:
        dest = builtin_models_dir()
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_path, dest / f"{BUILTIN_NAME}.safetensors")
        shutil.copyfile(model_path.with_suffix(".json"), dest / f"{BUILTIN_NAME}.json")
        log.info("installed %s as builtin:%s", model_path, BUILTIN_NAME)
    return result


def evaluate_and_record(
    model_path: Path,
    table: Path,
    eval_dir: Path,
    *,
    config: dict | None,
    cache_dir: Path | None,
    val_sampler=None,
    seed: int = 0,
) -> dict:
    """Evaluate a model file on held-out cases and add the figures to its training provenance.

    A model without a measured quality head (``meta.quality_r`` None) is first measured on
    ``val_sampler``'s patches (:func:`~ctsam.training.evaluate.quality_calibration`).
    """
    from ctsam.io.atomic import atomic_write_json
    from ctsam.model import load_model, read_model_metadata, save_model
    from ctsam.training.data import read_table
    from ctsam.training.evaluate import evaluate, format_summary, quality_calibration

    t0 = time.perf_counter()
    loaded = load_model(model_path)
    model = loaded.module
    training = read_model_metadata(model_path).get("training", {})
    if loaded.metadata.get("quality_r") is None and val_sampler is not None:
        cal = quality_calibration(model, val_sampler, seed=seed)
        loaded.update_metadata(quality_r=cal["r"])
        training["quality_calibration"] = cal
        log.info("quality head on %d validation patches: r = %.3f", cal["n"], cal["r"])
    ev = evaluate(model, read_table(table, need_coarse=True), eval_dir, config=config, cache_dir=cache_dir)
    log.info("held-out evaluation:\n%s", format_summary(ev))
    training["heldout_eval"] = {
        k: ev[k]
        for k in (
            "dice_by_clicks",
            "noc85_mean",
            "noc90_mean",
            "reached85_fraction",
            "reached90_fraction",
            "coarse_dice_mean",
            "fused_dice_mean",
            "fused_refined_fraction",
            "structures_refined",
            "coarse_dice_mean_refined",
            "refined_dice_mean",
            "refined_better_fraction",
            "structures_automatic",
            "structures_interactive",
            "cases",
        )
    }
    training["heldout_eval"]["wall_s"] = round(time.perf_counter() - t0, 1)
    save_model(loaded, model_path, metadata={"training": training})
    atomic_write_json(model_path.parent / "provenance.json", training)
    return ev


def _final_losses(metrics_path: Path) -> dict:
    import json

    train = [json.loads(line) for line in metrics_path.read_text().splitlines() if '"train"' in line]
    val = [json.loads(line) for line in metrics_path.read_text().splitlines() if '"val"' in line]
    out = {}
    if train:
        last = train[-1]
        tail = train[-5:]
        out.update(
            step=last["step"],
            loss_mean_last_logs=round(float(np.mean([t["loss_mean"] for t in tail])), 4),
            first_loss_mean=round(float(train[0]["loss_mean"]), 4),
            train_dice_last=round(float(last["train_dice"]), 4),
        )
    if val:
        out["val"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in val[-1].items() if k != "kind"}
    return out
