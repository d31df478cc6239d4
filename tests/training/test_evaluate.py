"""``ctsam evaluate``: click curves, NoC, the automatic seed -> refine pipeline against ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ctsam.training.evaluate import EvalSettings, click_curve, evaluate, format_summary, noc  # noqa: E402
from tests.training.test_train_data import synthetic_case  # noqa: E402


def test_quality_calibration_measures_the_head_against_true_iou():
    from ctsam.training.data import PatchSampler
    from ctsam.training.evaluate import quality_calibration

    sampler = PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=0)
    cal = quality_calibration(_model(), sampler, 4)
    assert cal["n"] == 4 and -1.0 <= cal["r"] <= 1.0 and 0.0 <= cal["mean_iou"] <= 1.0
    assert cal == quality_calibration(_model(), sampler, 4)  # deterministic


def test_label_overlap_dice_equals_mask_dice_across_slabs():
    from ctsam.masks import dice
    from ctsam.training.evaluate import _overlap_dice, label_overlaps
    from ctsam.volume import z_slabs

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(9, 30, 40)).astype(np.uint8)
    b = rng.integers(0, 6, size=(9, 30, 40)).astype(np.uint16)
    assert len(list(z_slabs(a.shape, voxels=2400))) == 5  # 2 slices per slab: the counts add up over slabs
    counts = label_overlaps(a, b, slab_voxels=2400)
    assert counts.sum() == a.size and counts.shape == (4, 6)
    for i in range(4):
        for j in range(6):
            assert _overlap_dice(counts, i, j) == pytest.approx(dice(a == i, b == j))
    assert _overlap_dice(counts, 1, None) == 0.0 and _overlap_dice(counts, 1, 9) == 0.0


def test_noc_convention():
    assert noc([0.5, 0.86, 0.95], 0.85) == (2, True)
    assert noc([0.5, 0.6, 0.7], 0.9) == (3, False)


def _model():
    from ctsam.model import build_model

    torch.manual_seed(0)
    return build_model("ctsam3d", "micro").module.eval()


def test_click_curve_length_and_range():
    case = synthetic_case()
    img = np.zeros((64, 64, 64), np.float32)
    tgt = np.zeros((64, 64, 64), bool)
    tgt[20:40, 20:40, 20:40] = True
    img[tgt] = 0.6
    curve = click_curve(_model(), img, tgt, n_clicks=3)
    assert len(curve) == 3 and all(0.0 <= d <= 1.0 for d in curve)
    assert case.hu.shape == (72, 80, 80)


@pytest.mark.slow
def test_evaluate_writes_tables_plot_and_compares_coarse(tmp_path):
    from ctsam.io.image import write_ct, write_labelmap
    from ctsam.volume import CTVolume, Geometry, LabelMap

    case = synthetic_case()
    g = Geometry(shape_zyx=case.hu.shape, spacing_xyz_mm=(1.5, 1.5, 1.5), origin_xyz_mm=(0.0, 0.0, 0.0))
    write_ct(tmp_path / "ct.nii.gz", CTVolume(case.hu, g))
    write_labelmap(tmp_path / "truth.nii.gz", LabelMap(case.labels, g, case.names))
    coarse = case.labels.copy()
    coarse[coarse == 2] = 0  # the coarse segmenter missed the sternum entirely
    write_labelmap(tmp_path / "coarse.nii.gz", LabelMap(coarse, g, {1: "liver"}))
    (tmp_path / "test.tsv").write_text("case_id\tct\tlabels\tcoarse\nsyn\tct.nii.gz\ttruth.nii.gz\tcoarse.nii.gz\n")
    from ctsam.training.data import read_table

    rows = read_table(tmp_path / "test.tsv")
    config = {"refine": {"propagation": False, "rounds": 1}}
    summary = evaluate(_model(), rows, tmp_path / "eval", config=config, settings=EvalSettings(n_clicks=2))
    out = tmp_path / "eval"
    for name in ("interactive.csv", "noc.csv", "automatic.csv", "summary.json", "curve.png"):
        assert (out / name).is_file(), name
    auto = pd.read_csv(out / "automatic.csv").set_index("structure")
    assert auto.loc["liver", "coarse_dice"] == pytest.approx(1.0)
    assert auto.loc["sternum", "coarse_dice"] == 0.0 and not bool(auto.loc["sternum", "refined"])
    assert auto.loc["sternum", "fused_dice"] == 0.0 and auto.loc["sternum", "fused_source"] == "none"
    assert auto.loc["liver", "fused_source"] in ("refined", "coarse") and auto.loc["liver", "fused_dice"] > 0.5
    inter = pd.read_csv(out / "interactive.csv")
    assert sorted(inter["clicks"].unique()) == [1, 2] and len(inter) == 4
    assert json.loads((out / "summary.json").read_text())["structures_automatic"] == 2
    assert summary["coarse_dice_mean"] == pytest.approx(0.5)
    text = format_summary(summary)
    assert "coarse 0.500 -> pipeline" in text and "NoC@85" in text


def test_evaluate_command_reports_bad_table(tmp_path):
    from ctsam.cli import main

    (tmp_path / "t.tsv").write_text("case_id\tct\nx\ty\n")
    assert (
        main(["evaluate", "--data", str(tmp_path / "t.tsv"), "--checkpoint", "builtin:nope", "-o", str(tmp_path / "o")])
        == 2
    )


def test_shipped_demo_model_loads_with_provenance():
    from ctsam.model import load_model, read_model_metadata
    from ctsam.resources import resolve_model_path

    path = resolve_model_path("builtin:demo_micro")
    assert path.is_file() and path.stat().st_size < 8_000_000
    model = load_model("builtin:demo_micro")
    assert model.variant == "micro"
    training = read_model_metadata(path)["training"]
    for key in ("command", "data", "settings", "steps_done", "final_losses", "heldout_eval"):
        assert key in training, key
    assert training["data"]["heldout_seed"] != training["data"]["train_seed"]
    # the shipped model starts from coarse masks and was measured on its held-out phantoms against them
    assert model.metadata["coarse_prompt_trained"] and model.metadata["quality_r"] is not None
    ev = training["heldout_eval"]
    assert ev["refined_dice_mean"] > ev["coarse_dice_mean_refined"] and ev["fused_dice_mean"] > ev["coarse_dice_mean"]


def test_unknown_builtin_model_is_refused():
    from ctsam.errors import CheckpointError
    from ctsam.resources import resolve_model_path

    with pytest.raises(CheckpointError, match="unknown built-in model"):
        resolve_model_path("builtin:no_such_model")
