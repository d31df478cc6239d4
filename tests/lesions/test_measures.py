"""Lesion measures against hand-computed geometry (ellipsoids with known diameters)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctsam.lesions.measures import (
    axial_axis,
    centroid_world_mm,
    containing_structure,
    longest_diameter_mm,
    recist_diameters,
)
from ctsam.volume import Geometry


def ellipsoid(geom: Geometry, center_zyx, semi_mm_xyz, rotate_deg: float = 0.0) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid (inclusive), semi-axes along x, y, z (rotated about z)."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in geom.shape_zyx], indexing="ij")
    sx, sy, sz = geom.spacing_xyz_mm
    dx, dy, dz = (xx - center_zyx[2]) * sx, (yy - center_zyx[1]) * sy, (zz - center_zyx[0]) * sz
    t = math.radians(rotate_deg)
    u, v = dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t)
    a, b, c = semi_mm_xyz
    return (u / a) ** 2 + (v / b) ** 2 + (dz / c) ** 2 <= 1.0 + 1e-9


def test_axis_aligned_ellipsoid_iso():
    g = Geometry((30, 50, 60), (1.0, 1.0, 1.0), (-30.0, -20.0, 50.0))
    m = ellipsoid(g, (15, 25, 30), (20, 12, 8))
    r = recist_diameters(m, g)
    assert r.axial_axis == "z" and r.slice_index == 15
    # the extreme voxel centres lie exactly on the surface: centre-to-centre diameters are exact
    assert r.long_axis_mm == pytest.approx(40.0)
    assert r.short_axis_mm == pytest.approx(24.0)
    assert longest_diameter_mm(m, g) == pytest.approx(40.0)
    assert m.sum() * g.voxel_volume_ml == pytest.approx(4 / 3 * math.pi * 20 * 12 * 8 / 1000, rel=0.03)
    cx, cy, cz = centroid_world_mm(m, g)
    assert (cx, cy, cz) == pytest.approx((-30.0 + 30, -20.0 + 25, 50.0 + 15))


def test_anisotropic_spacing_and_a_crop_offset():
    g = Geometry((24, 80, 80), (0.8, 0.8, 2.5), (0.0, 0.0, 0.0))
    m = ellipsoid(g, (12, 40, 40), (24.0, 16.0, 20.0))  # 30 and 20 voxels in plane, 8 slices
    r = recist_diameters(m, g)
    assert (r.long_axis_mm, r.short_axis_mm) == pytest.approx((48.0, 32.0))
    assert longest_diameter_mm(m, g) == pytest.approx(48.0)
    # the same lesion measured from a crop (start index given) gives the same numbers and slice
    crop = m[4:21, 10:71, 8:73]
    assert crop.sum() == m.sum()
    rc = recist_diameters(crop, g, start_zyx=(4, 10, 8))
    assert (rc.long_axis_mm, rc.short_axis_mm, rc.slice_index) == pytest.approx((48.0, 32.0, r.slice_index))
    assert centroid_world_mm(crop, g, (4, 10, 8)) == pytest.approx(centroid_world_mm(m, g))


def test_tall_lesion_long_axis_is_measured_in_the_axial_plane_not_in_3d():
    g = Geometry((60, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    m = ellipsoid(g, (30, 20, 20), (6, 4, 25))  # long along z (cranio-caudal)
    r = recist_diameters(m, g)
    assert (r.long_axis_mm, r.short_axis_mm) == pytest.approx((12.0, 8.0))
    assert longest_diameter_mm(m, g) == pytest.approx(50.0)


def test_rotated_lesion_diameters_within_a_voxel():
    g = Geometry((20, 80, 80), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    m = ellipsoid(g, (10, 40, 40), (25, 10, 5), rotate_deg=30)
    r = recist_diameters(m, g)
    assert r.long_axis_mm == pytest.approx(50.0, abs=1.5)
    assert r.short_axis_mm == pytest.approx(20.0, abs=1.5)


def test_sagittal_acquisition_uses_the_index_axis_along_s():
    # index x -> A (posterior-anterior), index y -> S, index z -> L: the axial planes are y-slices
    direction = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    g = Geometry((40, 50, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)
    assert axial_axis(g) == 1
    m = np.zeros(g.shape_zyx, bool)
    m[10:31, 25, 15:26] = True  # one axial (y) slice: 21 voxels along z (L), 11 along x (A)
    r = recist_diameters(m, g)
    assert r.axial_axis == "y" and r.slice_index == 25
    assert r.long_axis_mm == pytest.approx(math.hypot(20, 10))
    assert longest_diameter_mm(m, g) == pytest.approx(math.hypot(20, 10))


def test_single_voxel_and_empty():
    g = Geometry((5, 5, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    m = np.zeros(g.shape_zyx, bool)
    r = recist_diameters(m, g)
    assert (r.long_axis_mm, r.short_axis_mm, r.slice_index) == (0.0, 0.0, None)
    assert centroid_world_mm(m, g) is None
    m[2, 2, 2] = True
    assert recist_diameters(m, g).long_axis_mm == 0.0 and longest_diameter_mm(m, g) == 0.0


def test_containing_structure_is_the_majority_label():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:, :, :2] = 5
    labels[:, :, 2:] = 3
    m = np.zeros((4, 4, 4), bool)
    m[:, :, 1:4] = True  # 16 voxels in label 5, 32 in label 3
    name, frac = containing_structure(m, labels, {3: "liver", 5: "kidney_left"})
    assert name == "liver" and frac == pytest.approx(32 / 48)
    assert containing_structure(m, np.zeros_like(labels), {}) == (None, 0.0)
    assert containing_structure(np.zeros_like(m), labels, {}) == (None, 0.0)
