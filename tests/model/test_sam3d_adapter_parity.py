"""Parity with the published 3DSAM-adapter code (shared/fixtures/3dsam_adapter).

The fixture's manifest lists every entry of the published checkpoint's three parts; its README
defines each entry's values by a per-key seeded RNG. This test writes those weights as a published
``.pth`` (the ``torch.load`` dict users download), loads it through :func:`ctsam.model.load_model`
with a preset (the path users take), runs the one-click forward on the fixture's patch and click, and
compares the logits with what the published ``test.py`` forward computed (1e-3 absolute).

Cost: the published ViT-B forward on a 128^3 patch, a few minutes and about 3-4 GB on 2 CPU cores.
"""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import torch

from ctsam.model import OneClickSegmenter, load_model
from tests.model.fixture import write_sam3d_adapter_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fixture_dir(shared_fixtures):
    d = shared_fixtures / "3dsam_adapter"
    if not (d / "sam3d_adapter_manifest.json").is_file() or not (d / "sam3d_adapter_parity.npz").is_file():
        pytest.skip(f"3DSAM-adapter parity fixture not found in {d}")
    return d


def test_manifest_layout_is_the_published_vit_b(fixture_dir):
    from ctsam.model.sam3d_adapter import state_dict_to_published
    from ctsam.model.sam3d_family import expected_shapes

    manifest = json.loads((fixture_dir / "sam3d_adapter_manifest.json").read_text())
    published = state_dict_to_published({k: torch.empty(0) for k in expected_shapes("vit_b")})
    for part, entries in manifest["state_dicts"].items():
        name, _, index = part.partition(".")
        ours = list(published[name][int(index)] if index else published[name])
        assert ours == [e["key"] for e in entries], part  # every key, in the published order
    assert sum(manifest["n_params"].values()) == 224_466_316


def test_sam3d_adapter_parity_with_published_forward(fixture_dir, tmp_path):
    pth = write_sam3d_adapter_checkpoint(fixture_dir / "sam3d_adapter_manifest.json", tmp_path / "best.pth.tar")
    gc.collect()
    model = load_model(pth, preset="kits")
    assert isinstance(model, OneClickSegmenter)
    assert (model.family, model.variant) == ("sam3d_adapter", "vit_b")
    assert model.n_parameters() == 224_466_316
    pth.unlink()

    data = np.load(fixture_dir / "sam3d_adapter_parity.npz")
    image = torch.from_numpy(data["image"]).reshape(1, 1, 128, 128, 128)  # (d, h, w)
    points_dwh = torch.from_numpy(data["points"]).reshape(1, -1, 3)  # published (d, w, h)
    points_zyx = points_dwh[..., [0, 2, 1]]
    labels = torch.ones(points_zyx.shape[:2], dtype=torch.int64)
    expected = torch.from_numpy(data["logits"])
    with torch.inference_mode():
        logits = model.logits(image, points_zyx, labels)
    assert logits.shape == expected.shape == (1, 2, 128, 128, 128)
    err = (logits - expected).abs().max().item()
    assert err < 1e-3, f"max abs logit error {err:.2e}"
    # the mask decision differs at most where the published logits are within the tolerance of a tie
    ours, theirs = torch.softmax(logits, 1)[:, 1] > 0.5, torch.softmax(expected, 1)[:, 1] > 0.5
    tie = (expected[:, 1] - expected[:, 0]).abs() < 2e-3
    assert torch.equal(ours[~tie], theirs[~tie])
