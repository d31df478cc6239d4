"""ctsam.model with the small ``micro`` variant: click maps, shapes, batching, checkpoints, CLI."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from ctsam.errors import CheckpointError
from ctsam.model import (
    PatchFeatures,
    build_micro,
    click_maps,
    load_ctsam3d,
    save_published,
    save_safetensors,
)
from ctsam.model.checkpoint import (
    ctsam_to_published_key,
    expected_published_shapes,
    infer_variant,
    parse_published_config,
    published_to_ctsam_key,
    read_published_state_dict,
    read_safetensors_metadata,
    to_published_state_dict,
)
from ctsam.model.prompt import gaussian_kernel
from tests.model.fixture import deterministic_entry, write_published_params

S = 64


# ---------------------------------------------------------------- click maps
def _one(x, y, z, label=1):
    return click_maps(torch.tensor([[[x, y, z]]], dtype=torch.float32), torch.tensor([[label]]))


def test_click_map_axis_order_peak_and_kernel():
    m = _one(10, 20, 30)
    assert m.shape == (1, 2, S, S, S) and m.dtype == torch.float32
    assert m[0, 0, 30, 20, 10] == 1.0  # (x, y, z) click lands at array index [z, y, x]
    assert m[0, 1].abs().sum() == 0
    # sigma = 2 voxels: one voxel away along x -> exp(-1/8)
    assert m[0, 0, 30, 20, 11].item() == pytest.approx(torch.exp(torch.tensor(-1 / 8)).item(), abs=1e-7)
    # radius 8: the window ends 8 voxels away; the cube corner (d^2 = 192) is below eps and zeroed
    assert m[0, 0, 30, 20, 18] > 0 and m[0, 0, 30, 20, 19] == 0
    k = gaussian_kernel()
    assert k.shape == (17, 17, 17) and k[0, 0, 0] == 0 and k[8, 8, 0] > 0


def test_click_map_truncates_coordinates_toward_zero():
    assert torch.equal(_one(10.9, 20.99, 30.5), _one(10, 20, 30))


def test_click_map_clips_at_the_border():
    m = _one(0, 63, 0)
    assert m[0, 0, 0, 63, 0] == 1.0
    nz = m[0, 0].nonzero()  # (z, y, x) indices of the clipped window's support
    assert nz[:, 0].max() == 8 and nz[:, 1].min() == 55 and nz[:, 2].max() == 8
    assert m[0, 0, 8, 63, 0] > 0 and m[0, 0, 0, 55, 0] > 0


def test_click_map_labels_and_padding():
    pts = torch.tensor([[[10, 10, 10], [40, 40, 40], [50, 20, 20], [60, 60, 2]]], dtype=torch.float32)
    m = click_maps(pts, torch.tensor([[1, 0, 2, -1]]))
    assert m[0, 0, 10, 10, 10] == 1 and m[0, 1, 40, 40, 40] == 1 and m[0, 1, 20, 20, 50] == 1
    assert m[0, :, 2, 60, 60].sum() == 0  # -1 is padding


def test_click_map_later_clicks_overwrite_their_whole_window():
    pts = torch.tensor([[[20, 20, 20], [23, 20, 20]]], dtype=torch.float32)
    m = click_maps(pts, torch.tensor([[1, 1]]))
    # voxel x=20 lies in both windows: it holds the later click's value (3 voxels away), not the max 1
    assert m[0, 0, 20, 20, 20].item() == pytest.approx(torch.exp(torch.tensor(-9 / 8)).item(), abs=1e-7)
    assert m[0, 0, 20, 20, 23] == 1.0


def test_click_map_batch_items_are_independent_and_empty_is_zero():
    a = _one(10, 20, 30)
    empty = click_maps(torch.zeros(1, 1, 3), torch.tensor([[-1]]))
    assert empty.abs().sum() == 0
    both = click_maps(torch.tensor([[[10, 20, 30]], [[0, 0, 0]]], dtype=torch.float32), torch.tensor([[1], [-1]]))
    assert torch.equal(both[0:1], a) and both[1].abs().sum() == 0


def test_click_map_rejects_clicks_outside_the_patch():
    with pytest.raises(ValueError, match="outside the 64"):
        _one(64, 0, 0)
    with pytest.raises(ValueError, match="point_labels"):
        click_maps(torch.zeros(1, 2, 3), torch.zeros(1, 3))


# ---------------------------------------------------------------- model
@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return build_micro().eval()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, S, S, S, generator=g)


def test_micro_is_small_and_tiny_matches_the_published_size():
    assert build_micro().n_parameters() < 3_000_000
    # restv2_tiny: the manifest's n_params (74,023,154 float values) = ctsam's 427 entries without the
    # two int64 num_batches_tracked scalars, plus the dropped 3 x 128 SAM buffer
    published = expected_published_shapes("restv2_tiny")
    assert len(published) == 427
    n = sum(torch.Size(s).numel() for s in published.values())
    assert n - 2 + 3 * 128 == 74_023_154


def test_predict_patch_shapes_and_probs(micro, image):
    pts = torch.tensor([[[32, 30, 28], [0, 0, 0]]], dtype=torch.float32)
    out = micro.predict_patch(image, pts, torch.tensor([[1, -1]]))
    assert out["logits"].shape == (1, 2, S, S, S)
    assert out["probs"].shape == (1, 1, S, S, S)
    assert out["iou"].shape == (1, 1)
    assert torch.allclose(out["probs"], torch.sigmoid(out["logits"][:, :1]))
    assert not out["logits"].requires_grad


def test_shared_features_broadcast_against_prompt_sets(micro, image):
    """One encoded patch (batch 1) decoded against 2 prompt sets == each decoded with its own copy."""
    pts = torch.tensor([[[32, 30, 28]], [[12, 40, 50]]], dtype=torch.float32)
    labels = torch.tensor([[1], [0]])
    prev = torch.rand(2, 1, S, S, S, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        feats = micro.encode(image)
        shared = micro.decode(feats, pts, labels, prev)
        copied = micro.decode(PatchFeatures.cat([feats, feats]), pts, labels, prev)
    for key in ("logits", "iou"):
        assert torch.allclose(shared[key], copied[key], atol=1e-5), key
    assert not torch.allclose(shared["logits"][0], shared["logits"][1])
    with pytest.raises(ValueError, match="features have batch 2"):
        micro.decode(PatchFeatures.cat([feats, feats]), pts[:1].expand(3, -1, -1), labels[:1].expand(3, -1))


def test_input_shapes_are_checked(micro):
    with pytest.raises(ValueError, match=r"image must be \(B, 1, 64, 64, 64\)"):
        micro.encode(torch.zeros(1, 1, 32, 32, 32))


@pytest.mark.slow
def test_forward_trains_encoder_and_decoder():
    torch.manual_seed(0)
    model = build_micro().train()
    img = torch.rand(1, 1, S, S, S)
    out = model(img, torch.tensor([[[32.0, 32.0, 32.0]]]), torch.tensor([[1]]))
    (out["logits"].mean() + out["iou"].sum()).backward()
    assert model.image_encoder.stages[0].embed.conv1.weight.grad is not None
    assert model.mask_decoder.levels[0].block.norm_0.gamma.weight.grad is not None


def test_cross_patch_heatmap_shape(micro, image):
    h = micro.cross_patch_heatmap(image, torch.rand(1, 1, S, S, S), image.flip(2))
    assert h.shape == (1, 1, S, S, S) and torch.isfinite(h).all()


# ---------------------------------------------------------------- key mapping
def test_key_rules_are_inverse_on_micro():
    names = list(build_micro().state_dict())
    published = [ctsam_to_published_key(k) for k in names]
    assert None not in published and len(set(published)) == len(names)
    assert [published_to_ctsam_key(p) for p in published] == names


def test_variant_is_inferred_from_shapes():
    assert infer_variant(expected_published_shapes("micro"), published=True) == "micro"
    assert infer_variant(expected_published_shapes("restv2_tiny"), published=True) == "restv2_tiny"


# ---------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def micro_params(tmp_path_factory, micro):
    return save_published(micro, tmp_path_factory.mktemp("ckpt") / "params.pth")


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_published_format_round_trip(micro, micro_params):
    loaded = load_ctsam3d(micro_params)
    assert loaded.variant == "micro" and not loaded.training
    assert _same_weights(loaded, micro)
    assert loaded.meta.hu_window == (-125.0, 225.0) and loaded.meta.spacing_mm == 1.5
    assert loaded.meta.patch_size == 64 and len(loaded.meta.sha256) == 64
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in loaded.meta.dropped_keys


def test_safetensors_round_trip_is_deterministic(tmp_path, micro, micro_params):
    model = load_ctsam3d(micro_params)
    a = save_safetensors(model, tmp_path / "a.safetensors")
    b = save_safetensors(model, tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()
    assert json.loads((tmp_path / "a.json").read_text())["variant"] == "micro"
    again = load_ctsam3d(a)
    assert _same_weights(again, micro) and again.meta == model.meta


def test_safetensors_bytes_are_the_same_from_one_process_to_the_next(tmp_path):
    """The safetensors library keeps the header metadata in a hash map seeded per process: with several
    entries (the model's meta + training provenance) the file's bytes changed between runs until the
    header was written canonically."""
    import subprocess
    import sys

    code = (
        "import sys, torch; torch.manual_seed(0)\n"
        "from ctsam.model.registry import build_model\n"
        "from ctsam.model.checkpoint import save_safetensors\n"
        "extra = {f'k{i}': {'i': i} for i in range(6)}\n"
        "save_safetensors(build_model('micro'), sys.argv[1], extra_metadata=extra)\n"
    )
    paths = [tmp_path / f"{k}.safetensors" for k in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()
    assert read_safetensors_metadata(paths[0])["k5"] == {"i": 5}


def test_config_py_is_parsed_never_executed(tmp_path, micro_params):
    marker = tmp_path / "executed"
    cfg = tmp_path / "config.py"
    cfg.write_text(
        "import os\n"
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from easydict import EasyDict as edict\n"
        "cfg = edict()\n"
        "cfg.dataset = {}\n"
        "cfg.dataset.patch_size = [64, 64, 64]\n"
        "cfg.dataset.target_spacing = 1.5\n"
        "cfg.dataset.img_dir = os.path.join('a', 'b')\n"
        "cfg.dataset.normalization_params = {}\n"
        "cfg.dataset.normalization_params.min_value = -100\n"
        "cfg.dataset.normalization_params.max_value = 200\n"
        "cfg.dataset.normalization_params.clip = True\n"
        "cfg.network = 'micro'\n"
    )
    parsed = parse_published_config(cfg)
    assert parsed["dataset"]["normalization_params"] == {"min_value": -100, "max_value": 200, "clip": True}
    assert "img_dir" not in parsed["dataset"]
    model = load_ctsam3d(micro_params, config_path=cfg)
    assert model.meta.hu_window == (-100.0, 200.0)
    assert not marker.exists()
    cfg.write_text(cfg.read_text().replace("'micro'", "'restv2_small'"))
    with pytest.raises(CheckpointError, match="another network"):
        load_ctsam3d(micro_params, config_path=cfg)


def _published_state(micro):
    return to_published_state_dict(micro)


def test_missing_key_is_named(tmp_path, micro):
    state = _published_state(micro)
    del state["mask_decoder.spade3.conv_1.bias"]
    path = write_published_params(tmp_path / "params.pth", state)
    with pytest.raises(CheckpointError, match=r"1 missing: mask_decoder\.spade3\.conv_1\.bias"):
        load_ctsam3d(path)


def test_changed_shape_and_unexpected_key_are_named(tmp_path, micro):
    state = _published_state(micro)
    state["image_encoder.stage1.0.attn.q.weight"] = torch.zeros(3, 3)
    state["mask_decoder.reduce1.weight"] = torch.zeros(1)
    path = write_published_params(tmp_path / "params.pth", state)
    with pytest.raises(CheckpointError) as info:
        load_ctsam3d(path)
    msg = str(info.value)
    assert "1 mis-shaped: image_encoder.stage1.0.attn.q.weight (3, 3)" in msg
    assert "1 unexpected: mask_decoder.reduce1.weight" in msg


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_payload_is_refused_and_never_run(tmp_path, micro):
    marker = tmp_path / "pwned"
    state = _published_state(micro)
    zipped = tmp_path / "evil.pth"
    torch.save({"model_state_dict": state, "extra": _Payload(marker)}, zipped)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_ctsam3d(zipped)
    raw = tmp_path / "evil_raw.pth"
    raw.write_bytes(pickle.dumps({"model_state_dict": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        read_published_state_dict(raw)
    assert not marker.exists()


def test_truncated_and_foreign_files(tmp_path, micro_params, micro):
    data = micro_params.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_ctsam3d(cut)
    st = save_safetensors(micro, tmp_path / "m.safetensors", sidecar=False)
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[: st.stat().st_size - 1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_ctsam3d(cut_st)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or truncated"):
        load_ctsam3d(empty)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_ctsam3d(text)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_ctsam3d(tmp_path / "missing.pth")


def test_safetensors_without_ctsam_metadata(tmp_path, micro):
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in micro.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="no ctsam metadata"):
        load_ctsam3d(path)


def test_fixture_weight_rule():
    assert deterministic_entry("a.num_batches_tracked", [], "int64").dtype == torch.int64
    var = deterministic_entry("x.running_var", [5])
    assert (var >= 0.5).all()
    w = deterministic_entry("x.weight", [4, 3, 2])
    assert w.dtype == torch.float32 and w.std() < 1.0
    assert torch.equal(deterministic_entry("x.bias", [7]), deterministic_entry("x.bias", [7]))


# ---------------------------------------------------------------- CLI
def test_cli_convert_and_info(tmp_path, micro_params, capsys):
    from ctsam.cli import main

    out = tmp_path / "micro.safetensors"
    assert main(["model", "convert", str(micro_params), "-o", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert main(["model", "info", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == "micro" and report["n_parameters"] < 3_000_000
    assert report["meta"]["hu_window"] == [-125.0, 225.0]
    assert main(["model", "info", str(tmp_path / "nope.safetensors")]) == 2
