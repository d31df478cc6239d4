"""Pure geometry of the radiomics crops: bounding boxes and pyradiomics' resampling grid."""

from __future__ import annotations

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
imageoperations = pytest.importorskip("radiomics.imageoperations")

from ctsam.radiomics.grid import (  # noqa: E402
    Box,
    effective_resampled_spacing,
    input_box_for_grid,
    margin_voxels_zyx,
    resample_grid,
    structure_extents,
)


def test_structure_extents_match_brute_force(rng):
    labels = np.zeros((9, 11, 13), np.uint8)
    labels[1:4, 2:9, 5:6] = 3
    labels[8, 10, 12] = 7
    labels[0:2, 0:1, 0:13] = 1
    labels[5, 5, 5] = 1  # label 1 has two parts: bbox spans both
    ext = structure_extents(labels)
    assert sorted(ext) == [1, 3, 7]
    for lab, e in ext.items():
        zz, yy, xx = np.nonzero(labels == lab)
        assert e.box.start_zyx == (zz.min(), yy.min(), xx.min())
        assert e.box.stop_zyx == (zz.max() + 1, yy.max() + 1, xx.max() + 1)
        assert e.n_voxels == int((labels == lab).sum())
    assert ext[3].box.size_xyz == (1, 7, 3)


def test_structure_extents_rejects_float():
    with pytest.raises(TypeError, match="integer"):
        structure_extents(np.zeros((2, 2, 2), np.float32))


def test_box_grow_clips_to_shape():
    box = Box((2, 3, 4), (5, 6, 7)).grow((3, 1, 10), (6, 20, 9))
    assert box.start_zyx == (0, 2, 0) and box.stop_zyx == (6, 7, 9)


def test_margin_voxels_per_axis():
    assert margin_voxels_zyx(10.0, (0.5, 0.8, 5.0)) == (2, 13, 20)
    assert margin_voxels_zyx(0.0, (0.5, 0.8, 5.0), minimum_voxels=6) == (6, 6, 6)


def test_effective_spacing_zero_and_thin_axes():
    eff = effective_resampled_spacing([2.0, 0, 2.0], (0.7, 0.8, 5.0), (10, 10, 1))
    assert eff.tolist() == [2.0, 0.8, 5.0]


def _image(size_xyz, spacing, origin, direction, rng, dtype=np.int16):
    arr = rng.integers(-500, 500, size=tuple(reversed(size_xyz))).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _oblique_direction(angle_deg: float) -> tuple[float, ...]:
    a = np.deg2rad(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return tuple(r.ravel())


@pytest.mark.parametrize(
    "spacing, target, direction, box_zyx",
    [
        ((0.7, 0.7, 2.5), [2.0, 2.0, 2.0], (1, 0, 0, 0, 1, 0, 0, 0, 1), ((3, 5, 6), (9, 20, 17))),
        ((1.0, 1.0, 1.0), [2.0, 2.0, 2.0], (-1, 0, 0, 0, -1, 0, 0, 0, 1), ((0, 0, 0), (4, 7, 30))),  # at the border
        ((0.8, 0.9, 3.0), [1.5, 0, 1.5], _oblique_direction(17), ((2, 4, 4), (3, 12, 9))),  # 0 axis, thin in z
        ((3.0, 3.0, 3.0), [1.0, 1.0, 1.0], (1, 0, 0, 0, 1, 0, 0, 0, 1), ((10, 20, 25), (14, 25, 30))),  # upsample
    ],
)
def test_resample_grid_is_bit_identical_to_pyradiomics(rng, spacing, target, direction, box_zyx):
    size_xyz = (30, 24, 14)
    ct = _image(size_xyz, spacing, (-12.5, 30.25, 7.125), direction, rng)
    mask_arr = np.zeros(tuple(reversed(size_xyz)), np.uint8)
    (z0, y0, x0), (z1, y1, x1) = box_zyx
    mask_arr[z0:z1, y0:y1, x0:x1] = 1
    mask = sitk.GetImageFromArray(mask_arr)
    mask.CopyInformation(ct)
    ext = structure_extents(mask_arr)[1]
    grid = resample_grid(mask, ext.box.start_xyz, ext.box.size_xyz, target, pad_distance=5)
    ref_img, _ = imageoperations.resampleImage(ct, mask, resampledPixelSpacing=target, padDistance=5, label=1)
    assert grid.size_xyz == ref_img.GetSize()
    assert grid.spacing_xyz_mm == ref_img.GetSpacing()
    assert grid.origin_xyz_mm == ref_img.GetOrigin()  # bit-identical, not approximately
    assert grid.direction == ref_img.GetDirection()


def test_input_box_covers_grid_plus_margin(rng):
    ct = _image((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), rng)
    mask_arr = np.zeros((40, 40, 40), np.uint8)
    mask_arr[18:22, 18:22, 18:22] = 1
    mask = sitk.GetImageFromArray(mask_arr)
    ext = structure_extents(mask_arr)[1]
    grid = resample_grid(mask, ext.box.start_xyz, ext.box.size_xyz, [2.0, 2.0, 2.0], pad_distance=1)
    box = input_box_for_grid(ct, grid, margin_voxels=3)
    corners = np.array([ct.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in grid.corner_points_xyz_mm()])
    lo_xyz = np.asarray(box.start_zyx[::-1])
    hi_xyz = np.asarray(box.stop_zyx[::-1])
    assert np.all(corners.min(axis=0) - 3 >= lo_xyz - 1e-9)
    assert np.all(corners.max(axis=0) + 3 <= hi_xyz)
    assert input_box_for_grid(ct, grid, margin_voxels=100) == Box((0, 0, 0), (40, 40, 40))
