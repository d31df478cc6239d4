"""Parity with the published CT-SAM3D network through a published-format params.pth.

The shared fixture (``shared/fixtures/ctsam3d``) lists all 428 published state-dict entries and a
deterministic weight rule; its npz holds one input and the published model's outputs. We write a
``params.pth`` exactly as the published one is laid out, load it through :func:`load_ctsam3d` (and through
``ctsam model convert``), and compare. Two full restv2_tiny forwards (~5 s each on a CPU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ctsam.model import click_maps, load_ctsam3d
from ctsam.model.checkpoint import DROPPED, expected_published_shapes, published_to_ctsam_key
from ctsam.provenance import sha256_file
from tests.model.fixture import read_manifest, write_fixture_params

pytestmark = pytest.mark.slow
TOL = 1e-3


@pytest.fixture(scope="module")
def fixture_dir(shared_fixtures):
    d = shared_fixtures / "ctsam3d"
    if not (d / "ctsam3d_parity.npz").is_file():
        pytest.skip(f"CT-SAM3D parity fixture not found in {d}")
    return d


@pytest.fixture(scope="module")
def expected(fixture_dir):
    with np.load(fixture_dir / "ctsam3d_parity.npz") as npz:
        return {k: torch.from_numpy(npz[k]) for k in npz.files}


@pytest.fixture(scope="module")
def params_path(fixture_dir, tmp_path_factory):
    return write_fixture_params(
        fixture_dir / "ctsam3d_state_dict_manifest.json", tmp_path_factory.mktemp("ckpt_1000") / "params.pth"
    )


def _check_outputs(model, expected):
    image = expected["image"][None, None]
    out = model.predict_patch(image, expected["points_xyz"], expected["point_labels"], expected["prev_mask"])
    for key in ("logits", "probs", "iou"):
        assert out[key].shape == expected[key].shape, key
        err = (out[key] - expected[key]).abs().max().item()
        assert err <= TOL, f"{key}: max abs error {err}"
    heat = model.cross_patch_heatmap(image, out["probs"], expected["cpp_input_image_v"][None, None])
    assert heat.shape == expected["cpp_heatmap"].shape
    assert (heat - expected["cpp_heatmap"]).abs().max().item() <= TOL


def test_every_manifest_key_is_mapped_or_dropped(fixture_dir):
    entries = read_manifest(fixture_dir / "ctsam3d_state_dict_manifest.json")
    assert len(entries) == 428
    table = expected_published_shapes("restv2_tiny")
    for e in entries:
        if e["key"] in DROPPED:
            continue
        assert published_to_ctsam_key(e["key"]) is not None, e["key"]
        assert table[e["key"]] == tuple(e["shape"]), e["key"]
    assert len(table) == 428 - len(DROPPED)


def test_click_maps_match_exactly(expected):
    maps = click_maps(expected["points_xyz"], expected["point_labels"])
    assert (maps - expected["click_map"]).abs().max().item() <= 1e-6


def test_params_pth_matches_the_published_outputs(params_path, expected, fixture_dir):
    model = load_ctsam3d(params_path)
    assert model.variant == "restv2_tiny" and not model.training
    assert model.meta.sha256 == sha256_file(params_path)
    manifest = json.loads((fixture_dir / "ctsam3d_state_dict_manifest.json").read_text())
    with torch.inference_mode():
        feats = model.encode(expected["image"][None, None])
    for got, ref in zip(feats.maps, manifest["encoder_features"]):
        assert list(got.shape) == ref["shape"]
        assert got.mean().item() == pytest.approx(ref["mean"], abs=1e-4)
        assert got.std().item() == pytest.approx(ref["std"], abs=1e-4)
    _check_outputs(model, expected)


def test_converted_safetensors_match_the_published_outputs(params_path, expected, tmp_path):
    from ctsam.cli import main

    (params_path.parent / "config.py").write_text(
        "cfg = edict()\ncfg.dataset = {}\ncfg.dataset.normalization_params = {}\n"
        "cfg.dataset.normalization_params.min_value = -125\ncfg.dataset.normalization_params.max_value = 225\n"
        "cfg.dataset.target_spacing = 1.5\ncfg.network = 'restv2_tiny'\n"
    )
    out = tmp_path / "ctsam3d.safetensors"
    assert main(["model", "convert", str(params_path), "-o", str(out)]) == 0
    model = load_ctsam3d(out)
    assert model.variant == "restv2_tiny"
    assert model.meta.sha256 == sha256_file(params_path) and model.meta.source == "params.pth"
    assert model.meta.hu_window == (-125.0, 225.0) and model.meta.spacing_mm == 1.5
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["variant"] == "restv2_tiny" and sidecar["patch_size"] == 64
    _check_outputs(model, expected)
