"""``ctsam lesions`` end to end on a synthetic CT with a small random-weight 3DSAM-adapter model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctsam.cli import main
from ctsam.io.image import read_labelmap, write_ct, write_labelmap
from ctsam.volume import CTVolume, Geometry, LabelMap

GEOM = Geometry((40, 60, 64), (0.9, 0.9, 2.0), (-30.0, -25.0, 400.0))
LESION_FIELDS = {
    "lesion_id",
    "name",
    "label",
    "model",
    "click",
    "voxel_count",
    "volume_ml",
    "recist_long_axis_mm",
    "recist_short_axis_mm",
    "recist_slice",
    "longest_diameter_3d_mm",
    "centroid_lps_mm",
    "mean_probability",
    "max_probability",
    "touches_patch_border",
    "voxels_lost_to_overlap",
    "containing_structure",
    "containing_fraction",
    "notes",
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from ctsam.model import build_model, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny_lesion.safetensors"
    save_model(build_model("sam3d_adapter", "tiny"), path)
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("case")
    rng = np.random.default_rng(3)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in GEOM.shape_zyx], indexing="ij")
    organ = ((xx - 32) / 24.0) ** 2 + ((yy - 30) / 22.0) ** 2 + ((zz - 20) / 15.0) ** 2 <= 1
    tumour = ((xx - 28) * 0.9) ** 2 + ((yy - 30) * 0.9) ** 2 + ((zz - 20) * 2.0) ** 2 <= 8.0**2
    hu = np.where(organ, 60, -900) + np.where(tumour, -40, 0) + rng.normal(0, 8, GEOM.shape_zyx)
    write_ct(d / "ct.nii.gz", CTVolume(hu.astype(np.int16), GEOM))
    labels = organ.astype(np.uint8) * 5
    write_labelmap(d / "labels.nii.gz", LabelMap(labels, GEOM, {5: "liver"}))
    c1 = GEOM.index_to_world(np.array([28.0, 30.0, 20.0]))
    c2 = GEOM.index_to_world(np.array([2.0, 3.0, 1.0]))  # at the CT's corner: the patch is padded
    (d / "clicks.tsv").write_text(
        f"lesion_id\tx\ty\tz\tlabel\n4\t{c1[0]}\t{c1[1]}\t{c1[2]}\tliver_tumor\n9\t{c2[0]}\t{c2[1]}\t{c2[2]}\t\n"
    )
    return d


def run(*args) -> int:
    return main(["lesions", *map(str, args)])


def test_lesion_map_on_the_ct_grid_with_a_full_sidecar_byte_identical_twice(case, tiny_model, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}" / "lesions.nii.gz"
        assert (
            run(
                case / "ct.nii.gz",
                "--clicks",
                case / "clicks.tsv",
                "--checkpoint",
                tiny_model,
                "-o",
                out,
                "--labels",
                case / "labels.nii.gz",
                "--device",
                "cpu",
            )
            == 0
        )
        outs.append(out)
    a, b = outs
    for name in ("lesions.nii.gz", "lesions.json", "lesions.tsv"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name
    lm = read_labelmap(a)
    assert lm.geometry.same_space(GEOM) and lm.array.dtype == np.uint8
    assert lm.labels == {4: "lesion_4", 9: "lesion_9"}
    assert set(np.unique(lm.array)) <= {0, 4, 9}
    side = json.loads((a.parent / "lesions.json").read_text())
    assert side["format"] == "ctsam.lesions/1" and side["n_lesions"] == 2
    assert side["models"]["default"]["family"] == "sam3d_adapter" and side["models"]["default"]["variant"] == "tiny"
    assert side["compute"] == {"device_type": "cpu", "bf16_autocast": False}
    assert str(case) not in json.dumps(side)  # no input paths
    recs = {r["lesion_id"]: r for r in side["lesions"]}
    assert set(recs) == {4, 9}
    for lid, r in recs.items():
        assert set(r) == LESION_FIELDS
        n = int((lm.array == lid).sum())
        assert r["voxel_count"] == n
        assert r["volume_ml"] == pytest.approx(n * GEOM.voxel_volume_ml, abs=1e-4)
        assert r["recist_long_axis_mm"] >= r["recist_short_axis_mm"] >= 0
        assert r["longest_diameter_3d_mm"] >= r["recist_long_axis_mm"] - 1e-6
        if n:
            assert 0.5 <= r["mean_probability"] <= r["max_probability"] <= 1.0
            assert r["centroid_lps_mm"] is not None
        if r["touches_patch_border"]:
            assert any("border of the model's patch" in note for note in r["notes"])
    assert recs[4]["label"] == "liver_tumor" and recs[9]["label"] is None
    assert recs[4]["click"]["source"] == "row 2"
    np.testing.assert_allclose(recs[4]["click"]["index_zyx"], [20, 30, 28], atol=1e-2)
    if recs[4]["voxel_count"]:
        assert recs[4]["containing_structure"] in ("liver", None)


def test_seeds_give_one_lesion_per_component(case, tiny_model, tmp_path):
    seeds = np.zeros(GEOM.shape_zyx, np.uint8)
    seeds[18:23, 28:33, 26:31] = 1
    seeds[5:8, 50:55, 50:55] = 1
    write_labelmap(tmp_path / "seeds.nii.gz", LabelMap(seeds, GEOM, {}))
    out = tmp_path / "l.nii.gz"
    assert run(case / "ct.nii.gz", "--seeds", tmp_path / "seeds.nii.gz", "--checkpoint", tiny_model, "-o", out) == 0
    side = json.loads((tmp_path / "l.json").read_text())
    assert [r["lesion_id"] for r in side["lesions"]] == [1, 2]
    assert side["lesions"][0]["click"]["source"] == "seed label 1 component 1"
    assert "containing_structure" not in side["lesions"][0]  # no --labels


def test_no_clicks_writes_an_empty_map(case, tmp_path):
    out = tmp_path / "l.nii.gz"
    assert run(case / "ct.nii.gz", "--no-clicks", "-o", out, "--checkpoint", "builtin:none-needed") == 0
    assert not read_labelmap(out).array.any()
    assert json.loads((tmp_path / "l.json").read_text())["n_lesions"] == 0


@pytest.mark.parametrize(
    "table, message",
    [
        ("lesion_id\tx\ty\tz\n1\t0\t0\t0\n", "outside the CT"),
        ("lesion_id\tx\ty\tz\n1\t-20\t-20\t420\n1\t-20\t-20\t420\n", "duplicate lesion_id"),
        ("lesion_id\tx\ty\tz\n", "empty"),
    ],
)
def test_bad_clicks_exit_2_naming_the_row(case, tiny_model, tmp_path, capsys, table, message):
    (tmp_path / "c.tsv").write_text(table)
    out = tmp_path / "l.nii.gz"
    assert run(case / "ct.nii.gz", "--clicks", tmp_path / "c.tsv", "--checkpoint", tiny_model, "-o", out) == 2
    err = capsys.readouterr().err
    assert message in err
    if "empty" not in message:
        assert "row" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "c.tsv"]  # nothing half-written


def test_wrong_model_files_exit_2(case, tmp_path, capsys):
    import torch

    from ctsam.model import build_model, save_model

    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    assert (
        run(
            case / "ct.nii.gz",
            "--clicks",
            case / "clicks.tsv",
            "--checkpoint",
            tmp_path / "broken.safetensors",
            "-o",
            tmp_path / "l.nii.gz",
        )
        == 2
    )
    torch.manual_seed(0)
    save_model(build_model("ctsam3d", "micro"), tmp_path / "anatomy.safetensors")
    assert (
        run(
            case / "ct.nii.gz",
            "--clicks",
            case / "clicks.tsv",
            "--checkpoint",
            tmp_path / "anatomy.safetensors",
            "-o",
            tmp_path / "l.nii.gz",
        )
        == 2
    )
    assert "not a one-click lesion model" in capsys.readouterr().err
    assert not (tmp_path / "l.nii.gz").exists()


def test_labels_pick_their_models(case, tiny_model, tmp_path, capsys):
    # only liver_tumor has a model and there is no default: the unlabelled click is refused
    assert (
        run(
            case / "ct.nii.gz",
            "--clicks",
            case / "clicks.tsv",
            "--checkpoint",
            f"liver_tumor={tiny_model}",
            "-o",
            tmp_path / "l.nii.gz",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no lesion model for this click's label" in err and "row 3" in err
