"""The shipped demo lesion model (builtin:demo_lesion): it loads, its provenance says how it was trained
and on what, and the one-click figures quoted in the docs are the ones it recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ctsam.training.lesion_demo import BUILTIN_NAME, DEMO_HU_WINDOW, HELDOUT_SEED

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "ctsam" / "resources" / "models" / f"{BUILTIN_NAME}.safetensors"


@pytest.fixture(scope="module")
def model():
    from ctsam.model import load_model

    return load_model(f"builtin:{BUILTIN_NAME}")


def test_demo_lesion_model_loads_as_tiny_sam3d_adapter(model):
    assert model.family == "sam3d_adapter" and model.variant == "tiny"
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
    assert training["settings"]["variant"] == "tiny" and training["settings"]["device"] == "cpu"
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
    doc = (ROOT / "docs" / "lesions_training.md").read_text()
    for key in ("table_click", "random_click"):
        assert f"{ev[key]['dice_mean']:.3f}" in doc, key
        assert f"{ev[key]['baseline_dice_mean']:.3f}" in doc, key
    config = load_config(None)
    assert config["workflow"]["demo"]["seed"] == HELDOUT_SEED
    assert config["lesions"]["checkpoint"] == f"builtin:{BUILTIN_NAME}"
