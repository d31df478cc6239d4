"""3DSAM-adapter behind the model seam, on the ``tiny`` variant (same code as the published ``vit_b``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctsam.errors import CheckpointError
from ctsam.model import (
    FAMILIES,
    PRESETS,
    InputSpec,
    OneClickSegmenter,
    build_model,
    describe,
    load_model,
    save_model,
    save_published,
)


@pytest.fixture(scope="module")
def tiny() -> OneClickSegmenter:
    torch.manual_seed(0)
    model = build_model("sam3d_adapter", "tiny").eval()
    assert isinstance(model, OneClickSegmenter)
    return model


@pytest.fixture(scope="module")
def patch() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 1, 64, 64, 64, generator=g)


def _click(z: float, y: float, x: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[[z, y, x]]]), torch.tensor([[1]])


def test_registry_names_both_families():
    assert set(FAMILIES) == {"ctsam3d", "sam3d_adapter"}
    assert FAMILIES["sam3d_adapter"].variants == ("vit_b", "tiny", "tiny32")
    with pytest.raises(ValueError, match="known: vit_b, tiny, tiny32"):
        build_model("sam3d_adapter", "huge")
    with pytest.raises(ValueError, match="unknown model family"):
        build_model("unet", "tiny")


def test_published_layout_counts_224466316_values():
    with torch.device("meta"):
        model = build_model("sam3d_adapter", "vit_b")
    assert model.n_parameters() == 224_466_316
    assert model.input_spec.patch_size_zyx == (128, 128, 128)


def test_logits_and_probability_shapes(tiny, patch):
    pts, lab = _click(32, 20, 40)
    with torch.inference_mode():
        logits = tiny.logits(patch, pts, lab)
        prob = tiny.foreground_probability(patch, pts, lab)
    assert logits.shape == (1, 2, 64, 64, 64) and logits.dtype == torch.float32
    assert prob.shape == (1, 64, 64, 64)
    torch.testing.assert_close(prob, torch.softmax(logits, 1)[:, 1])
    assert torch.isfinite(logits).all()


def test_click_axes_are_converted_to_the_published_dwh(tiny, patch):
    """ctsam (z, y, x) -> published (d, w, h): calling the network directly with swapped y/x agrees."""
    pts, lab = _click(10, 50, 30)
    with torch.inference_mode():
        ours = tiny.logits(patch, pts, lab)
        direct = tiny.module(patch, torch.tensor([[[10.0, 30.0, 50.0]]]))
        swapped = tiny.module(patch, torch.tensor([[[10.0, 50.0, 30.0]]]))
    torch.testing.assert_close(ours, direct, rtol=0, atol=0)
    assert (ours - swapped).abs().max() > 1e-4  # the click position matters


def test_batch_is_per_patch_and_padding_ignored(tiny, patch):
    other = torch.flip(patch, dims=[2])
    pts = torch.tensor([[[32.0, 20.0, 40.0], [0.0, 0.0, 0.0]], [[5.0, 6.0, 7.0], [40.0, 41.0, 42.0]]])
    lab = torch.tensor([[1, -1], [1, 1]])
    with torch.inference_mode():
        both = tiny.logits(torch.cat([patch, other]), pts, lab)
        first = tiny.logits(patch, pts[:1, :1], lab[:1, :1])
        second = tiny.logits(other, pts[1:], lab[1:])
    torch.testing.assert_close(both[:1], first, rtol=0, atol=0)
    torch.testing.assert_close(both[1:], second, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no click"):
        tiny.logits(patch, pts[:1], torch.tensor([[-1, -1]]))
    with pytest.raises(ValueError, match="patch must be"):
        tiny.logits(patch[:, :, :32], pts[:1], lab[:1])


def test_chunked_embedding_equals_the_published_full_upsampling(tiny, patch):
    enc = tiny.module.image_encoder
    with torch.inference_mode():
        chunked = enc.embed_volume(patch)
        up = F.interpolate(patch.repeat(1, 3, 1, 1, 1), scale_factor=128 / 64, mode="trilinear")
        full = enc.embed_slices(up[0].transpose(0, 1))
    torch.testing.assert_close(chunked, full, rtol=0, atol=0)


def test_training_forward_gradients_and_the_frozen_patch_embedding(patch):
    torch.manual_seed(3)
    model = build_model("sam3d_adapter", "tiny").train()
    enc = model.module.image_encoder
    enc.patch_embed.requires_grad_(False)  # frozen, as SAM's patch embedding is in the published recipe
    pts, lab = _click(30, 30, 30)
    model.logits(patch, pts, lab)[:, 1].mean().backward()
    assert enc.patch_embed.proj.weight.grad is None  # published: run under no_grad
    assert enc.slice_embed.weight.grad is not None and enc.blocks[0].adapter.linear1.weight.grad is not None
    assert model.module.prompt_encoders[3].transformer.layers[0].global_query.grad is not None
    assert model.module.prompt_encoders[0].transformer.layers[0].global_query.grad is None  # only level 4 prompted
    enc.patch_embed.requires_grad_(True)  # trainable (recipe full): it gets its gradient
    model.logits(patch, pts, lab)[:, 1].mean().backward()
    assert enc.patch_embed.proj.weight.grad is not None and enc.patch_embed.proj.weight.grad.abs().sum() > 0


def test_input_spec_normalise_is_clip_then_zscore():
    spec = PRESETS["kits"].input_spec()
    hu = np.array([-1000.0, -54.0, 100.0, 247.0, 3000.0])
    expected = (np.clip(hu, -54, 247) - 59.53867) / 55.457336
    out = spec.normalise(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert spec.spacing_zyx_mm == (1.0, 1.0, 1.0) and spec.patch_size_zyx == (128, 128, 128)
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    unit = InputSpec((64,) * 3, (1.5,) * 3, hu_window=(-100.0, 100.0), unit_range=True)
    np.testing.assert_allclose(unit.normalise(np.array([-200.0, 0.0, 50.0])), [0.0, 0.5, 0.75])


def test_presets_are_the_published_conventions():
    assert {k: (p.hu_window, p.mean, p.sd) for k, p in PRESETS.items()} == {
        "kits": ((-54.0, 247.0), 59.53867, 55.457336),
        "lits": ((-48.0, 163.0), 60.057533, 40.198017),
        "msd_pancreas": ((-39.0, 204.0), 68.45214, 63.422806),
        "msd_colon": ((-57.0, 175.0), 65.175035, 32.651197),
    }


def test_safetensors_round_trip_is_exact_and_reproducible(tiny, patch, tmp_path):
    tiny.with_input_spec(
        InputSpec((64,) * 3, (1.5,) * 3, hu_window=(-100.0, 200.0), zscore_mean_std=(50.0, 60.0)),
        output_classes=("background", "liver_tumor"),
    )
    a = save_model(tiny, tmp_path / "a.safetensors", metadata={"trained_from": "abc", "note": "x"})
    b = save_model(tiny, tmp_path / "b.safetensors", metadata={"trained_from": "abc", "note": "x"})
    assert a.read_bytes() == b.read_bytes()
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar["family"] == "sam3d_adapter" and sidecar["trained_from"] == "abc"
    loaded = load_model(a)
    assert isinstance(loaded, OneClickSegmenter)
    assert (loaded.family, loaded.variant) == ("sam3d_adapter", "tiny")
    assert loaded.input_spec == tiny.input_spec
    assert loaded.output_classes == ("background", "liver_tumor")
    assert loaded.metadata["note"] == "x" and loaded.sha256 is not None
    pts, lab = _click(32, 20, 40)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.logits(patch, pts, lab), tiny.logits(patch, pts, lab), rtol=0, atol=0)


def test_published_pth_needs_a_preset_and_loads_exactly(tiny, patch, tmp_path):
    pth = save_published(tiny, tmp_path / "best.pth.tar")
    obj = torch.load(pth, weights_only=True)
    assert set(obj) == {"encoder_dict", "feature_dict", "decoder_dict"} and len(obj["feature_dict"]) == 4
    with pytest.raises(CheckpointError, match="needs its preset"):
        load_model(pth)
    with pytest.raises(CheckpointError, match="unknown preset"):
        load_model(pth, preset="brain")
    loaded = load_model(pth, preset="lits")
    assert loaded.input_spec.preset == "lits" and loaded.output_classes == ("background", "liver_tumor")
    assert loaded.input_spec.patch_size_zyx == (64, 64, 64)  # the tiny network's own patch
    pts, lab = _click(32, 20, 40)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.logits(patch, pts, lab), tiny.logits(patch, pts, lab), rtol=0, atol=0)
    info = describe(load_model(pth, require_preset=False))
    assert info["family"] == "sam3d_adapter" and info["n_parameters"] == tiny.n_parameters()


def _edited(tiny, tmp_path, edit):
    obj = {
        "encoder_dict": dict(tiny.module.image_encoder.state_dict()),
        "feature_dict": [dict(p.state_dict()) for p in tiny.module.prompt_encoders],
        "decoder_dict": dict(tiny.module.mask_decoder.state_dict()),
    }
    edit(obj)
    path = tmp_path / "edited.pth"
    torch.save(obj, path)
    return path


def test_mismatched_published_checkpoints_name_the_first_bad_entry(tiny, tmp_path):
    def drop(o):
        del o["feature_dict"][3]["transformer.layers.1.norm4.bias"]

    def extra(o):
        o["decoder_dict"]["cls.5.weight"] = torch.zeros(1)

    def reshape(o):
        o["encoder_dict"]["depth_embed"] = torch.zeros(1, 9, 48)

    def nan(o):
        w = o["encoder_dict"]["blocks.2.adapter.conv.weight"].clone()
        w[0, 0, 0, 0, 0] = float("nan")
        o["encoder_dict"]["blocks.2.adapter.conv.weight"] = w

    def three_features(o):
        o["feature_dict"] = o["feature_dict"][:3]

    cases = [
        (drop, "1 missing (first: feature_dict.3.transformer.layers.1.norm4.bias)"),
        (extra, "1 unexpected (first: decoder_dict.cls.5.weight)"),
        (reshape, "mis-shaped (first: encoder_dict.depth_embed (1, 9, 48), expected (1, 8, 48))"),
        (nan, "1 NaN/inf value(s) in encoder_dict.blocks.2.adapter.conv.weight"),
        (three_features, "feature_dict must be a list of 4"),
    ]
    for edit, message in cases:
        with pytest.raises(CheckpointError) as err:
            load_model(_edited(tiny, tmp_path, edit), preset="kits")
        assert message in str(err.value), str(err.value)


def test_preset_refused_for_ctsam3d(tmp_path):
    torch.manual_seed(0)
    micro = build_model("ctsam3d", "micro")
    path = save_model(micro, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.family == "ctsam3d" and loaded.variant == "micro"
    assert loaded.input_spec.unit_range and loaded.input_spec.patch_size_zyx == (64, 64, 64)
    with pytest.raises(CheckpointError, match="only to 3DSAM-adapter"):
        load_model(path, preset="kits")


def test_cli_info_and_convert_with_preset(tiny, tmp_path, capsys):
    from ctsam.cli import main

    pth = save_published(tiny, tmp_path / "tumour.pth")
    assert main(["model", "info", str(pth)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["family"], info["variant"], info["n_parameters"]) == ("sam3d_adapter", "tiny", tiny.n_parameters())
    assert info["input_spec"]["preset"] is None
    out = tmp_path / "tumour.safetensors"
    assert main(["model", "convert", str(pth), "-o", str(out)]) == 2  # a published .pth needs its preset
    assert "needs its preset" in capsys.readouterr().err
    assert not out.exists()
    assert main(["model", "convert", str(pth), "--preset", "msd_pancreas", "-o", str(out)]) == 0
    converted = load_model(out)
    assert converted.input_spec == PRESETS["msd_pancreas"].input_spec(64)
    assert converted.output_classes == ("background", "pancreas_tumor")
    assert converted.sha256 == load_model(pth, preset="kits").sha256  # provenance: the source .pth
    assert main(["model", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["input_spec"]["zscore_mean_std"] == [68.45214, 63.422806]


def test_ctsam3d_checkpoints_with_nan_are_refused(tmp_path):
    torch.manual_seed(0)
    micro = build_model("ctsam3d", "micro")
    pth = save_published(micro, tmp_path / "params.pth")
    obj = torch.load(pth, weights_only=True)
    key = "mask_decoder.mask_prediction_head.0.weight"
    obj["model_state_dict"][key] = torch.full_like(obj["model_state_dict"][key], float("inf"))
    torch.save(obj, pth)
    with pytest.raises(CheckpointError, match=f"NaN/inf value.* in {key}"):
        load_model(pth)
