"""Patch grid, sampling, pasting back and overlap resolution (no network needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ctsam.errors import ConfigError
from ctsam.lesions.clicks import Click
from ctsam.lesions.engine import LesionPrediction, LesionSettings, resolve_overlaps
from ctsam.lesions.patch import paste_back, patch_center_zyx, patch_grid, sample_patch, touches_faces
from ctsam.volume import Geometry

# an oblique, anisotropic CT grid (rotated 20 degrees about z)
_T = np.radians(20)
DIRECTION = ((np.cos(_T), -np.sin(_T), 0.0), (np.sin(_T), np.cos(_T), 0.0), (0.0, 0.0, 1.0))
CT = Geometry((30, 70, 80), (0.8, 0.9, 2.5), (-20.0, 10.0, -100.0), DIRECTION)


def world_of_patch_voxels(grid: Geometry) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in grid.shape_zyx], indexing="ij")
    return grid.index_to_world(np.stack([xx, yy, zz], -1).astype(float))


def test_patch_grid_puts_the_click_on_the_centre_voxel_along_the_ct_axes():
    click = CT.index_to_world(np.array([40.3, 35.0, 12.7]))
    grid = patch_grid(CT, click, (16, 24, 20), (1.0, 1.5, 2.0))
    assert grid.shape_zyx == (16, 24, 20) and grid.spacing_xyz_mm == (2.0, 1.5, 1.0)
    assert grid.direction == CT.direction
    c = patch_center_zyx((16, 24, 20))
    np.testing.assert_allclose(grid.index_to_world(np.array(c[::-1], float)), click, atol=1e-9)


def test_sampling_a_linear_ct_is_exact_and_pads_outside():
    # HU = a linear function of world position: linear interpolation reproduces it exactly inside the CT
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in CT.shape_zyx], indexing="ij")
    world = CT.index_to_world(np.stack([xx, yy, zz], -1).astype(float))
    hu = (world @ np.array([2.0, -1.0, 3.0])).astype(np.float32)
    click = CT.index_to_world(np.array([40.0, 35.0, 15.0]))
    grid = patch_grid(CT, click, (8, 12, 12), (2.0, 1.0, 1.0))
    patch = sample_patch(hu, CT, grid, pad_hu=-1024.0)
    expected = world_of_patch_voxels(grid) @ np.array([2.0, -1.0, 3.0])
    np.testing.assert_allclose(patch, expected, atol=2e-3 * np.abs(expected).max())
    # near the corner of the CT, the patch sticks out: those voxels are padding
    corner = CT.index_to_world(np.array([0.0, 0.0, 0.0]))
    grid = patch_grid(CT, corner, (8, 8, 8), (2.0, 1.0, 1.0))
    patch = sample_patch(hu, CT, grid, pad_hu=-1024.0)
    idx = CT.world_to_index(world_of_patch_voxels(grid))
    outside = np.any(idx < -0.5, axis=-1)
    assert outside.any() and np.all(patch[outside] == -1024.0)
    assert np.all(patch[~outside & np.all(idx >= 0, axis=-1)] != -1024.0)


def test_paste_back_puts_a_world_sphere_at_its_place_on_the_ct_grid():
    center = CT.index_to_world(np.array([40.0, 35.0, 15.0]))
    grid = patch_grid(CT, center, (32, 32, 32), (1.0, 1.0, 1.0))
    prob = (np.linalg.norm(world_of_patch_voxels(grid) - center, axis=-1) <= 8.0).astype(np.float32)
    start, pasted = paste_back(prob, grid, CT)
    zz, yy, xx = np.meshgrid(*[np.arange(a, a + n) for a, n in zip(start, pasted.shape)], indexing="ij")
    dist = np.linalg.norm(CT.index_to_world(np.stack([xx, yy, zz], -1).astype(float)) - center, axis=-1)
    assert np.all(pasted[dist <= 6.5] > 0.5)
    assert np.all(pasted[dist >= 9.5] < 0.5)
    assert touches_faces(prob) is False and touches_faces(np.ones((3, 3, 3), bool)) is True


def _pred(lid: int, start, prob: np.ndarray) -> LesionPrediction:
    return LesionPrediction(Click(lid, (0.0, 0.0, 0.0)), "", start, prob, prob >= 0.5, False, True)


def test_overlaps_go_to_the_higher_probability_and_ties_to_the_lower_id():
    a = np.full((4, 4, 4), 0.8, np.float32)
    b = np.full((4, 4, 4), 0.8, np.float32)
    b[2:] = 0.9  # lesion 2 is surer in the overlap's upper half
    c = np.full((2, 2, 2), 0.6, np.float32)
    preds = [_pred(2, (2, 0, 0), b), _pred(1, (0, 0, 0), a), _pred(7, (8, 8, 8), c)]
    out, lost = resolve_overlaps((10, 10, 10), preds)
    assert out.dtype == np.uint8
    # overlap z 2..3: lesion 2's z-rows 0..1 (0.8 = tie -> lesion 1); z 4..5: lesion 2 alone
    assert np.all(out[0:4, 0:4, 0:4] == 1) and np.all(out[4:6, 0:4, 0:4] == 2)
    assert np.all(out[8:10, 8:10, 8:10] == 7) and (out > 0).sum() == 64 + 32 + 8
    assert lost == {1: 0, 2: 32, 7: 0}
    # the order of the table does not matter
    out2, _ = resolve_overlaps((10, 10, 10), preds[::-1])
    assert np.array_equal(out, out2)
    a[2:] = 0.95  # now lesion 1 is surer where they overlap
    out3, lost3 = resolve_overlaps((10, 10, 10), [_pred(1, (0, 0, 0), a), _pred(2, (2, 0, 0), b)])
    assert np.all(out3[2:4, 0:4, 0:4] == 1) and lost3[2] == 32
    assert resolve_overlaps((10, 10, 10), [_pred(300, (0, 0, 0), a)])[0].dtype == np.uint16


def test_settings_are_checked():
    with pytest.raises(ConfigError):
        LesionSettings(threshold=1.0)
    with pytest.raises(ConfigError):
        LesionSettings(keep="largest")


def test_a_click_below_the_threshold_keeps_only_a_near_component():
    from ctsam.lesions.engine import nearest_component

    comp = np.zeros((20, 20, 20), np.int32)
    comp[10, 10, 13:15] = 2  # 3 voxels (3 mm) from the click along x
    comp[10, 2:4, 10] = 1  # 6 voxels away
    assert nearest_component(comp, (10, 10, 10), (1.0, 1.0, 1.0), 5.0) == 2
    assert nearest_component(comp, (10, 10, 10), (1.0, 1.0, 2.0), 5.0) == 0  # 6 mm along x now
    assert nearest_component(comp, (10, 10, 10), (1.0, 1.0, 1.0), 2.0) == 0
    comp[10, 7, 10] = 3  # also 3 mm away: the lower label wins the tie
    assert nearest_component(comp, (10, 10, 10), (1.0, 1.0, 1.0), 5.0) == 2
