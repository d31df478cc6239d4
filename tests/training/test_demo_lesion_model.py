"""The shipped demo lesion model (builtin:demo_lesion): it loads, its provenance says how it was trained
and on what, and the one-click figures quoted in the docs are the ones it recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ctsam.training.lesion_demo import BUILTIN_NAME, DEMO_HU_WINDOW, DEMO_VARIANT, HELDOUT_SEED

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "ctsam" / "resources" / "models" / f"{BUILTIN_NAME}.safetensors"


@pytest.fixture(scope="module")
def model():
    from ctsam.model import load_model

    return load_model(f"builtin:{BUILTIN_NAME}")


def test_demo_lesion_model_loads_as_tiny_sam3d_adapter(model):
    assert model.family == "sam3d_adapter" and model.variant == DEMO_VARIANT == "tiny32"
    assert model.input_spec.hu_window == DEMO_HU_WINDOW and model.input_spec.zscore_mean_std is not None
    assert model.output_classes == ("background", "lesion")
    assert WEIGHTS.stat().st_size < 8 * 2**20
    p = model.input_spec.patch_size_zyx
    with torch.no_grad():
        prob = model.foreground_probability(
            torch.zeros((1, 1, *p)),
            torch.tensor([[[p[0] / 2, p[1] / 2, p[2] / 2]]]),
            torch.ones((1, 1), dtype=torch.int64),
        )
    assert prob.shape == (1, *p) and torch.isfinite(prob).all()


def test_demo_lesion_model_records_training_and_heldout_figures(model):
    training = model.metadata["training"]
    assert training["steps_done"] > 0 and training["parameters"]["trainable"] > 0
    assert training["settings"]["variant"] == DEMO_VARIANT and training["settings"]["device"] == "cpu"
    data = training["data"]
    assert data["heldout_seed"] == HELDOUT_SEED != data["train_seed"]  # held-out phantoms never seen in training
    ev = training["heldout_eval"]
    for key in ("table_click", "random_click"):
        s = ev[key]
        assert s["lesions"] >= 5
        assert 0.0 <= s["dice_mean"] <= 1.0 and 0.0 <= s["baseline_dice_mean"] <= 1.0
    assert ev["published_one_click_dice_for_context"]["kits21_kidney_tumour"] == pytest.approx(0.738)
    sidecar = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert sidecar["training"]["heldout_eval"]["table_click"] == ev["table_click"]


def test_demo_lesion_model_figures_in_the_docs_are_the_recorded_ones(model):
    from ctsam.config import load_config

    ev = model.metadata["training"]["heldout_eval"]
    for doc_name in ("docs/lesions_training.md", "README.md"):
        doc = (ROOT / doc_name).read_text()
        for key in ("table_click", "random_click"):
            for figure in ("dice_mean", "dice_median", "baseline_dice_mean", "baseline_dice_median"):
                assert f"{ev[key][figure]:.3f}" in doc, (doc_name, key, figure)
    config = load_config(None)
    assert config["workflow"]["demo"]["seed"] == HELDOUT_SEED
    assert config["lesions"]["checkpoint"] == f"builtin:{BUILTIN_NAME}"


def test_demo_lesion_calibration_is_recorded_chosen_on_training_and_applied(model):
    from ctsam.training.lesion_demo import CALIBRATION_GRID, set_calibration

    cal = model.metadata["calibration"]
    grid = {r["delta"]: r["train_dice_mean_table_click"] for r in cal["grid"]}
    assert tuple(grid) == CALIBRATION_GRID
    assert grid[cal["delta"]] == max(grid.values())  # chosen on the training phantoms
    assert cal["heldout_calibrated"]["table_click"] == model.metadata["training"]["heldout_eval"]["table_click"]
    assert len(cal["previous_sha256"]) == 64
    p = model.input_spec.patch_size_zyx
    args = (
        torch.zeros((1, 1, *p)),
        torch.tensor([[[p[0] / 2, p[1] / 2, p[2] / 2]]]),
        torch.ones((1, 1), dtype=torch.int64),
    )
    with torch.no_grad():
        calibrated = model.logits(*args)
        set_calibration(model, 0.0)
        try:
            raw = model.logits(*args)
        finally:
            set_calibration(model, cal["delta"], **{k: v for k, v in cal.items() if k != "delta"})
    assert torch.allclose(calibrated[:, 1] - raw[:, 1], torch.full_like(raw[:, 1], cal["delta"]), atol=1e-5)
    assert torch.equal(calibrated[:, 0], raw[:, 0])


def test_non_finite_calibration_is_refused(tmp_path, model):
    from ctsam.errors import CheckpointError
    from ctsam.model import load_model, save_model

    path = tmp_path / "bad.safetensors"
    save_model(model, path, metadata={"calibration": {"delta": float("nan")}})
    with pytest.raises(CheckpointError, match="calibration"):
        load_model(path)


def test_training_from_the_calibrated_model_drops_its_offset(tmp_path):
    from ctsam.model import load_model
    from ctsam.training.lesion_demo import demo_settings, set_calibration
    from ctsam.training.lesion_loop import LesionTrainer

    model = load_model(f"builtin:{BUILTIN_NAME}")
    set_calibration(model, 0.25)
    assert model.logit_offset == 0.25
    LesionTrainer(demo_settings(1, 1.0, 1), None, tmp_path, model=model)
    assert model.logit_offset == 0.0


def test_demo_lesion_model_reproduces_its_recorded_heldout_dice(tmp_path, model):
    """Re-run the held-out evaluation on the first held-out phantom: the shipped model's one-click Dice
    per lesion (and the baseline's) are the ones recorded in its metadata and quoted in the docs."""
    from ctsam.training.demo import write_phantom_cases
    from ctsam.training.lesion_demo import evaluate_heldout

    table = write_phantom_cases(tmp_path / "heldout", seed=HELDOUT_SEED, indices=[1], lesions=True)
    ev = evaluate_heldout(model, table, cache_dir=tmp_path / "cache", seed=42)
    recorded = {
        (r["case_id"], r["lesion"]): r for r in model.metadata["training"]["heldout_eval"]["per_lesion_table_click"]
    }
    rows = ev["per_lesion_table_click"]
    assert rows, "the first held-out phantom has lesions"
    for r in rows:
        rec = recorded[(r["case_id"], r["lesion"])]
        assert r["voxels"] == rec["voxels"]
        assert r["dice"] == pytest.approx(rec["dice"], abs=2e-3)
        assert r["baseline_dice"] == pytest.approx(rec["baseline_dice"], abs=2e-3)
