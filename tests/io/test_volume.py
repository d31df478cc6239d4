from __future__ import annotations

import json

import numpy as np
import pytest

from ctsam.errors import InputDataError, SpaceMismatchError
from ctsam.io.atomic import atomic_path, atomic_write_json
from ctsam.io.image import read_ct, read_labelmap, write_ct, write_labelmap
from ctsam.io.labeltable import labels_from_xml, labels_to_xml, sidecar_tsv_path
from ctsam.volume import CTVolume, Geometry, LabelMap, check_same_space


def oblique_geometry(shape_zyx=(5, 6, 7)) -> Geometry:
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return Geometry(
        shape_zyx=shape_zyx, spacing_xyz_mm=(0.8, 0.9, 2.5), origin_xyz_mm=(-10.0, 20.0, 30.0), direction=rot
    )


def test_index_world_roundtrip():
    g = oblique_geometry()
    idx = np.array([[0, 0, 0], [6, 5, 4], [1.5, 2.25, 3.0]])
    assert np.allclose(g.world_to_index(g.index_to_world(idx)), idx)
    # voxel (0,0,1) is one slice step (2.5 mm) along the third direction column
    assert np.allclose(g.index_to_world([0, 0, 1]) - g.index_to_world([0, 0, 0]), [0, 0, 2.5])


def test_affine_roundtrip():
    g = oblique_geometry()
    g2 = Geometry.from_affine_ras(g.affine_ras(), g.shape_zyx)
    assert g.same_space(g2, tolerance_mm=1e-9)


def test_check_same_space_prints_both(tmp_path):
    g = oblique_geometry()
    other = Geometry(
        shape_zyx=g.shape_zyx, spacing_xyz_mm=g.spacing_xyz_mm, origin_xyz_mm=(0, 0, 0), direction=g.direction
    )
    check_same_space(g, g)
    with pytest.raises(SpaceMismatchError, match=r"origin_xyz_mm=\(-10.0, 20.0, 30.0\)") as info:
        check_same_space(g, other, case="c1")
    assert "origin_xyz_mm=(0.0, 0.0, 0.0)" in str(info.value)
    assert "case c1" in str(info.value)


def test_ct_roundtrip(tmp_path, rng):
    g = oblique_geometry()
    arr = rng.integers(-1024, 2000, size=g.shape_zyx).astype(np.int16)
    write_ct(tmp_path / "ct.nii.gz", CTVolume(arr, g))
    back = read_ct(tmp_path / "ct.nii.gz")
    assert back.array.dtype == np.int16
    assert np.array_equal(back.array, arr)
    assert back.geometry.same_space(g, tolerance_mm=1e-4)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_labelmap_table_in_header_and_sidecar(tmp_path):
    import nibabel as nib

    g = oblique_geometry()
    arr = np.zeros(g.shape_zyx, np.uint8)
    arr[1:3, 2:4, 3:5] = 5
    arr[4, 0, 0] = 2
    lm = LabelMap(arr, g, {2: "kidney_right", 5: "liver", 7: "absent_but_listed"})
    path = tmp_path / "seg.nii.gz"
    write_labelmap(path, lm)
    assert sidecar_tsv_path(path).read_text().splitlines()[1] == "2\tkidney_right"
    sidecar_tsv_path(path).unlink()  # header alone must carry the names
    back = read_labelmap(path)
    assert back.labels == lm.labels
    assert np.array_equal(back.array, arr)
    # TotalSegmentator's reader parses extensions[0] with xmltodict-like access: check the raw XML form
    raw = nib.load(str(path)).header.extensions[0].get_content()
    assert b'<Label Key="5"' in raw and b"<![CDATA[liver]]>" in raw


def test_labelmap_unknown_labels_named(tmp_path):
    g = oblique_geometry()
    arr = np.zeros(g.shape_zyx, np.uint16)
    arr[0, 0, 0] = 300
    path = tmp_path / "x.nii"
    write_labelmap(path, LabelMap(arr, g, {}))
    back = read_labelmap(path)
    assert back.labels == {300: "label_300"}
    assert back.array.dtype == np.uint16


def test_xml_roundtrip_special_names():
    labels = {1: "a&b <c>", 2: "x]]>y"}
    assert labels_from_xml(labels_to_xml(labels)) == labels


def test_identical_writes_identical_bytes(tmp_path, rng):
    g = oblique_geometry()
    arr = rng.integers(0, 3, size=g.shape_zyx).astype(np.uint8)
    write_labelmap(tmp_path / "a.nii.gz", LabelMap(arr, g, {1: "x", 2: "y"}))
    write_labelmap(tmp_path / "b.nii.gz", LabelMap(arr, g, {1: "x", 2: "y"}))
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


def test_corrupt_file_is_input_error(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputDataError, match="could not be read"):
        read_ct(bad, case="c9")
    with pytest.raises(InputDataError, match="not found"):
        read_ct(tmp_path / "missing.nii.gz")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []
    atomic_write_json(dest, {"a": float("nan"), "b": [1, 2]})
    assert json.loads(dest.read_text()) == {"a": None, "b": [1, 2]}


def test_atomic_outputs_have_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "p.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o644


def test_world_bounds_of_a_flipped_grid_equal_the_original():
    g = Geometry(shape_zyx=(4, 5, 6), spacing_xyz_mm=(1.0, 2.0, 3.0), origin_xyz_mm=(0.0, 0.0, 0.0))
    flipped = Geometry(
        shape_zyx=(4, 5, 6),
        spacing_xyz_mm=(1.0, 2.0, 3.0),
        origin_xyz_mm=(0.0, 8.0, 0.0),
        direction=((1, 0, 0), (0, -1, 0), (0, 0, 1)),
    )
    assert np.allclose(g.world_bounds_mm(), [[0, 0, 0], [5, 8, 9]])
    assert np.allclose(flipped.world_bounds_mm(), g.world_bounds_mm())
    assert not g.same_space(flipped)
