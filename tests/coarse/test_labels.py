"""Coarse stage, ``labels`` backend: user label maps onto the CT grid and the catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctsam import labels as L
from ctsam.coarse.mapping import relabel
from ctsam.coarse.stage import run_labels_backend, sidecar_path_for
from ctsam.coarse.userlabels import only_grid_differs, resample_nearest
from ctsam.errors import InputDataError, SpaceMismatchError
from ctsam.io.image import read_ct, read_labelmap, write_ct, write_labelmap
from ctsam.io.labeltable import write_label_tsv
from ctsam.volume import CTVolume, Geometry, LabelMap

REPO = Path(__file__).resolve().parents[2]
DIR = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def _ct(tmp_path: Path, shape=(8, 12, 10), spacing=(2.0, 2.0, 3.0)) -> tuple[Path, Geometry]:
    g = Geometry(shape, spacing, (10.0, -5.0, 40.0), DIR)
    path = tmp_path / "ct.nii.gz"
    write_ct(path, CTVolume(np.full(shape, -100, np.int16), g))
    return path, g


def _labels_array(shape) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[1:4, 2:6, 2:5] = 1
    a[4:7, 6:10, 5:9] = 2
    a[0, 0, 0] = 3
    return a


def test_multilabel_with_tsv_aliases_and_unknown_drop(tmp_path):
    ct_path, g = _ct(tmp_path)
    arr = _labels_array(g.shape_zyx)
    lab = tmp_path / "user.nii.gz"
    write_labelmap(lab, LabelMap(arr, g, {1: "Liver", 2: "left kidney", 3: "tumour"}))
    out = tmp_path / "coarse.nii.gz"
    summary = run_labels_backend(ct_path, out, lab, case="c01")
    lm = read_labelmap(out)
    assert lm.geometry.same_space(g) and lm.array.dtype == np.uint8
    assert lm.labels == {3: "kidney_left", 5: "liver"}
    assert set(np.unique(lm.array)) == {0, 3, 5}
    assert (lm.array == 5).sum() == (arr == 1).sum()
    side = json.loads(sidecar_path_for(out).read_text())
    assert side == summary.sidecar
    assert side["backend"] == "labels" and side["unknown_names"] == ["tumour"] and side["dropped_voxels"] == 1
    assert side["classes_found"]["liver"]["voxels"] == int((arr == 1).sum())
    assert side["name_matches"]["left kidney"]["name"] == "kidney_left"
    assert side["case"] == "c01"


def test_unknown_keep_and_v1_heart_parts(tmp_path):
    ct_path, g = _ct(tmp_path)
    arr = _labels_array(g.shape_zyx)
    lab = tmp_path / "user.nii.gz"
    table = tmp_path / "names.tsv"
    write_labelmap(lab, LabelMap(arr, g, {}))
    write_label_tsv(table, {1: "heart_myocardium", 2: "heart", 3: "lesion"})
    out = tmp_path / "coarse.nii.gz"
    run_labels_backend(ct_path, out, lab, label_table=table, unknown="keep")
    lm = read_labelmap(out)
    assert lm.labels == {51: "heart", 118: "heart_myocardium", 128: "lesion"}


def test_same_name_twice_is_merged(tmp_path):
    rel = relabel(np.array([[[1, 2, 0]]], np.uint8), {1: "bladder", 2: "urinary_bladder"})
    assert rel.labels == {21: "urinary_bladder"}
    assert rel.merged == {"urinary_bladder": ["bladder", "urinary_bladder"]}
    assert rel.array.tolist() == [[[21, 21, 0]]]


def test_mask_folder(tmp_path):
    ct_path, g = _ct(tmp_path)
    folder = tmp_path / "masks"
    folder.mkdir()
    arr = _labels_array(g.shape_zyx)
    for value, name in ((1, "spleen"), (2, "aorta")):
        write_ct(folder / f"{name}.nii.gz", CTVolume((arr == value).astype(np.int16), g))
    overlap = np.zeros(g.shape_zyx, np.int16)
    overlap[1:3, 2:4, 2:4] = 1  # inside spleen: spleen (id 1) comes first in catalogue order and wins
    write_ct(folder / "stomach.nii.gz", CTVolume(overlap, g))
    out = tmp_path / "coarse.nii.gz"
    summary = run_labels_backend(ct_path, out, folder)
    lm = read_labelmap(out)
    assert lm.labels == {1: "spleen", 52: "aorta"}
    assert summary.sidecar["labels_input"]["overlap_voxels"] == int(overlap.sum())
    assert summary.sidecar["classes_absent"] == ["stomach"]


def test_nrrd_slicer_segment_names(tmp_path):
    import SimpleITK as sitk

    ct_path, g = _ct(tmp_path)
    arr = _labels_array(g.shape_zyx)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(g.spacing_xyz_mm)
    img.SetOrigin(g.origin_xyz_mm)
    img.SetDirection(np.asarray(g.direction).ravel().tolist())
    for i, (value, name) in enumerate(((1, "Spleen"), (2, "Pancreas"))):
        img.SetMetaData(f"Segment{i}_Name", name)
        img.SetMetaData(f"Segment{i}_LabelValue", str(value))
        img.SetMetaData(f"Segment{i}_Layer", "0")
    lab = tmp_path / "seg.seg.nrrd"
    sitk.WriteImage(img, str(lab))
    out = tmp_path / "coarse.nii.gz"
    run_labels_backend(ct_path, out, lab)
    assert read_labelmap(out).labels == {1: "spleen", 7: "pancreas"}


def test_unnamed_label_map_is_refused(tmp_path):
    ct_path, g = _ct(tmp_path)
    lab = tmp_path / "plain.nii.gz"
    write_ct(lab, CTVolume(_labels_array(g.shape_zyx).astype(np.int16), g))
    with pytest.raises(InputDataError, match="no label names"):
        run_labels_backend(ct_path, tmp_path / "o.nii.gz", lab)


def test_grid_only_difference_resampled_when_allowed(tmp_path):
    ct_path, g = _ct(tmp_path, shape=(8, 12, 10), spacing=(2.0, 2.0, 3.0))
    # the same physical box at half the voxel size: origin moves by a quarter of the CT voxel
    fine_spacing = (1.0, 1.0, 1.5)
    shift_xyz = -(np.asarray(g.spacing_xyz_mm) - fine_spacing) / 2
    origin = tuple(np.asarray(g.origin_xyz_mm) + g.direction_matrix @ shift_xyz)
    fine = Geometry((16, 24, 20), fine_spacing, origin, DIR)
    coarse_arr = _labels_array(g.shape_zyx)
    fine_arr = coarse_arr.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    assert only_grid_differs(g, fine, extent_tolerance_mm=1e-3)
    lab = tmp_path / "fine.nii.gz"
    write_labelmap(lab, LabelMap(fine_arr, fine, {1: "liver", 2: "spleen", 3: "stomach"}))
    with pytest.raises(SpaceMismatchError, match="same region but on different voxel grids") as info:
        run_labels_backend(ct_path, tmp_path / "o.nii.gz", lab)
    assert "--resample" in str(info.value) and "(16, 24, 20)" in str(info.value) and "(8, 12, 10)" in str(info.value)
    out = tmp_path / "o.nii.gz"
    summary = run_labels_backend(ct_path, out, lab, resample=True)
    lm = read_labelmap(out)
    assert lm.geometry.same_space(g)
    expected = np.choose(coarse_arr, [0, 5, 1, 6]).astype(np.uint8)
    np.testing.assert_array_equal(lm.array, expected)
    assert summary.sidecar["labels_input"]["resampled_from"]["shape_zyx"] == [16, 24, 20]


def test_different_region_is_an_error_even_with_resample(tmp_path):
    ct_path, g = _ct(tmp_path)
    shifted = Geometry(g.shape_zyx, g.spacing_xyz_mm, (g.origin_xyz_mm[0], g.origin_xyz_mm[1], 70.0), DIR)
    lab = tmp_path / "shifted.nii.gz"
    write_labelmap(lab, LabelMap(_labels_array(g.shape_zyx), shifted, {1: "liver"}))
    with pytest.raises(SpaceMismatchError, match="do not cover the same region") as info:
        run_labels_backend(ct_path, tmp_path / "o.nii.gz", lab, resample=True)
    assert "70.0" in str(info.value) and "40.0" in str(info.value)


def test_resample_nearest_identity():
    g = Geometry((3, 4, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    np.testing.assert_array_equal(resample_nearest(a, g, g), a)


def test_output_is_deterministic(tmp_path):
    ct_path, g = _ct(tmp_path)
    lab = tmp_path / "user.nii.gz"
    write_labelmap(lab, LabelMap(_labels_array(g.shape_zyx), g, {1: "liver", 2: "spleen"}))
    run_labels_backend(ct_path, tmp_path / "a.nii.gz", lab)
    run_labels_backend(ct_path, tmp_path / "b.nii.gz", lab)
    for suffix in (".nii.gz", ".tsv", ".json"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()


@pytest.mark.shared_data
def test_cli_example_seg_fast_gives_40_classes_on_ct_grid(shared_data, tmp_path):
    ex = shared_data / "totalseg_examples"
    out = tmp_path / "coarse.nii.gz"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctsam",
            "coarse",
            str(ex / "example_ct_sm.nii.gz"),
            "-o",
            str(out),
            "--backend",
            "labels",
            "--labels",
            str(ex / "example_seg_fast.nii.gz"),
            "--case",
            "ex01",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lm = read_labelmap(out)
    ct = read_ct(ex / "example_ct_sm.nii.gz")
    assert lm.geometry.same_space(ct.geometry) and lm.array.shape == ct.array.shape
    assert len(lm.labels) == 40 and len(lm.present_labels()) == 40
    assert all(L.ts_total_name(i) == n for i, n in lm.labels.items())
    src = read_labelmap(ex / "example_seg_fast.nii.gz")
    np.testing.assert_array_equal(lm.array, src.array)  # same ids: TotalSegmentator output is already in 'total' space
    side = json.loads((tmp_path / "coarse.json").read_text())
    assert side["n_classes_found"] == 40 and side["unknown_names"] == [] and side["case"] == "ex01"
