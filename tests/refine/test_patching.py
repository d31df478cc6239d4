import numpy as np
import pytest

from ctsam.refine.patching import (
    PatchBox,
    blend_weights,
    box_around,
    crop_padded,
    face_neighbours,
    face_slab,
    frame_zyx_to_world,
    index_bbox_of_world_box,
    model_frame_for,
    paste_add,
    resample,
    subgrid,
    world_to_frame_zyx,
)
from ctsam.volume import Geometry

FLIP = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def ct_geometry():
    return Geometry(
        shape_zyx=(10, 20, 30), spacing_xyz_mm=(0.8, 0.8, 3.0), origin_xyz_mm=(100.0, 50.0, -20.0), direction=FLIP
    )


def test_model_frame_is_rai_and_covers_every_ct_voxel():
    ct = ct_geometry()
    frame = model_frame_for(ct, 1.5)
    assert frame.direction == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    assert frame.spacing_xyz_mm == (1.5, 1.5, 1.5)
    # x runs from 100 down to 100 - 29*0.8 = 76.8: origin at the minimum corner
    assert frame.origin_xyz_mm == pytest.approx((76.8, 50 - 19 * 0.8, -20.0))
    corners = np.array([[i, j, k] for i in (0, 29) for j in (0, 19) for k in (0, 9)], float)
    idx = frame.world_to_index(ct.index_to_world(corners))
    assert idx.min() >= -1e-6
    assert np.all(idx.max(axis=0) <= np.array(frame.shape_xyz) - 1 + 1e-6)
    # and no more than one voxel of slack at the far end
    assert np.all(np.array(frame.shape_xyz) - 1 - idx.max(axis=0) < 1.0)


def test_box_around_puts_centre_at_voxel_32_and_snaps():
    b = box_around((100.2, 40.6, 7.0), 64)
    assert b.start_zyx == (68, 9, -25) and b.center_zyx == (100, 41, 7)
    assert b.stop_zyx == (132, 73, 39)
    s = box_around((100.2, 40.6, 7.0), 64, snap=8)
    assert all(v % 8 == 0 for v in s.start_zyx)
    assert all(abs(c - v) <= 4 for c, v in zip(s.center_zyx, (100, 41, 7)))
    assert b.contains_zyx((100, 41, 7), margin=31) and not b.contains_zyx((100, 41, 7), margin=33)


def test_crop_padded_pads_outside_and_copies():
    a = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    c = crop_padded(a, (-1, 3, 4), (3, 4, 4), pad_value=-1024)
    assert c.shape == (3, 4, 4)
    assert np.all(c[0] == -1024)  # z = -1 outside
    assert np.array_equal(c[1:, :2, :2], a[0:2, 3:5, 4:6])
    assert np.all(c[1:, 2:, :] == -1024) and np.all(c[1:, :, 2:] == -1024)
    c[1, 0, 0] = 7
    assert a[0, 3, 4] == 3 * 6 + 4  # the crop is a copy


def test_paste_add_inverts_crop_in_overlap():
    dest = np.zeros((8, 8, 8), np.float32)
    patch = np.ones((4, 4, 4), np.float32)
    paste_add(dest, (2, 2, 2), patch, (0, 0, 0))  # patch covers frame 0..3, dest starts at 2
    assert dest[:2, :2, :2].sum() == 8 and dest.sum() == 8
    paste_add(dest, (2, 2, 2), patch, (10, 10, 10))  # fully outside: no-op
    assert dest.sum() == 8


def test_blend_weights_ramp():
    w = blend_weights(16, 4, floor=0.1)
    assert w.shape == (16, 16, 16) and w[8, 8, 8] == 1.0
    assert w[0, 8, 8] < w[2, 8, 8] < w[4, 8, 8] == 1.0
    assert np.allclose(w, w[::-1, ::-1, ::-1])
    assert w.min() > 0


def test_neighbours_and_face_slabs():
    b = PatchBox((0, 0, 0), 64)
    n = face_neighbours(b, 48)
    assert [(a, s) for a, s, _ in n] == [(0, -1), (0, 1), (1, -1), (1, 1), (2, -1), (2, 1)]
    assert n[1][2].start_zyx == (48, 0, 0) and n[4][2].start_zyx == (0, 0, -48)
    assert b.overlap_zyx(n[1][2]) == (slice(48, 64), slice(0, 64), slice(0, 64))
    assert b.overlap_zyx(PatchBox((64, 0, 0))) is None
    m = np.zeros((64, 64, 64), bool)
    m[face_slab(64, 2, 1, 2)] = True
    assert m[:, :, 62:].all() and not m[:, :, :62].any()


def test_world_frame_roundtrip_and_subgrid():
    frame = model_frame_for(ct_geometry(), 1.5)
    zyx = np.array([[3.0, 4.5, 6.25]])
    assert np.allclose(world_to_frame_zyx(frame, frame_zyx_to_world(frame, zyx)), zyx)
    sub = subgrid(frame, (3, 4, 5), (2, 2, 2))
    assert np.allclose(sub.index_to_world([0, 0, 0]), frame.index_to_world([5, 4, 3]))


def test_resample_roundtrip_and_bbox_mapping():
    ct = Geometry(shape_zyx=(12, 16, 16), spacing_xyz_mm=(3.0, 3.0, 3.0), origin_xyz_mm=(0, 0, 0), direction=FLIP)
    vol = np.zeros(ct.shape_zyx, np.float32)
    vol[4:8, 5:11, 6:12] = 1.0
    frame = model_frame_for(ct, 1.5)
    up = resample(vol, ct, frame, linear=True)
    assert up.shape == frame.shape_zyx
    back = resample(up, frame, ct, linear=True)
    assert np.allclose(back, vol, atol=1e-5)
    # a frame box maps to a CT index box that contains it
    start, stop = index_bbox_of_world_box(ct, frame, (8, 10, 10), (4, 4, 4), pad=0)
    w = frame.index_to_world(np.array([[10, 10, 8], [13, 13, 11]], float))
    idx = ct.world_to_index(w)[:, ::-1]
    assert np.all(idx.min(axis=0) >= np.array(start) - 1e-6) and np.all(idx.max(axis=0) <= np.array(stop) - 1 + 1e-6)
    assert index_bbox_of_world_box(ct, frame, (500, 500, 500), (4, 4, 4)) is None
