"""Pure geometry for patch-based inference: the model frame, 64^3 patch boxes, crop, paste, neighbours.

Frames and conventions:

* **CT grid**: the input CT's own :class:`~ctsam.volume.Geometry` (any direction, spacing).
* **Model frame**: the grid the network works on, as CT-SAM3D does: RAI (identity direction in
  LPS), isotropic ``spacing_mm`` (1.5 mm), origin at the minimum world corner of the CT's voxel
  centres, large enough to hold every CT voxel centre. Built by :func:`model_frame_for`.
* **Patch box**: a cube of ``size`` voxels (64) in the model frame, given by its integer start
  index ``(z, y, x)``. Boxes may stick out of the frame; crops are padded (-1024 HU for images).
  The patch voxel ``(32, 32, 32)`` is the box's centre voxel.

All arrays are indexed ``(z, y, x)``; click coordinates handed to the network are ``(x, y, z)``
patch-voxel indices. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ctsam.volume import Geometry

_IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def model_frame_for(ct: Geometry, spacing_mm: float = 1.5) -> Geometry:
    """The RAI ``spacing_mm`` isotropic grid covering every voxel centre of ``ct``.

    Direction is the identity (LPS axes), the origin is the minimum world corner of the CT's
    voxel centres, and the shape is the smallest that reaches the maximum corner.
    """
    lo, hi = ct.world_bounds_mm()
    n_xyz = [int(math.ceil((h - l) / spacing_mm - 1e-6)) + 1 for l, h in zip(lo, hi)]
    return Geometry(
        shape_zyx=(n_xyz[2], n_xyz[1], n_xyz[0]),
        spacing_xyz_mm=(spacing_mm,) * 3,
        origin_xyz_mm=tuple(float(v) for v in lo),
        direction=_IDENTITY,
    )


@dataclass(frozen=True, order=True)
class PatchBox:
    """A cube of ``size`` voxels in the model frame, starting at index ``start_zyx`` (may be negative)."""

    start_zyx: tuple[int, int, int]
    size: int = 64

    @property
    def stop_zyx(self) -> tuple[int, int, int]:
        return tuple(s + self.size for s in self.start_zyx)  # type: ignore[return-value]

    @property
    def center_zyx(self) -> tuple[int, int, int]:
        """Index of the patch's centre voxel (patch voxel ``size // 2``) in the frame."""
        return tuple(s + self.size // 2 for s in self.start_zyx)  # type: ignore[return-value]

    def contains_zyx(self, index_zyx, margin: float = 0.0) -> bool:
        """Whether a (continuous) frame index lies inside the box, at least ``margin`` voxels from its faces."""
        return all(a + margin <= v <= a + self.size - 1 - margin for a, v in zip(self.start_zyx, index_zyx))

    def shifted(self, axis: int, voxels: int) -> PatchBox:
        start = list(self.start_zyx)
        start[axis] += voxels
        return PatchBox(tuple(start), self.size)  # type: ignore[arg-type]

    def overlap_zyx(self, other: PatchBox) -> tuple[slice, slice, slice] | None:
        """The overlap of two boxes as frame slices, or None."""
        lo = [max(a, b) for a, b in zip(self.start_zyx, other.start_zyx)]
        hi = [min(a, b) for a, b in zip(self.stop_zyx, other.stop_zyx)]
        if any(h <= l for l, h in zip(lo, hi)):
            return None
        return tuple(slice(l, h) for l, h in zip(lo, hi))  # type: ignore[return-value]

    def key(self) -> str:
        return "{}_{}_{}".format(*self.start_zyx)


def box_around(center_index_zyx, size: int = 64, snap: int = 1) -> PatchBox:
    """The box whose centre voxel is the (rounded) ``center_index_zyx``.

    With ``snap > 1`` the start is rounded to the nearest multiple of ``snap``, so nearby
    centres share one box (and its encoder features); the centre then moves by at most
    ``snap / 2`` voxels per axis.
    """
    start = []
    for c in center_index_zyx:
        s = int(math.floor(float(c) + 0.5)) - size // 2
        if snap > 1:
            s = int(math.floor(s / snap + 0.5)) * snap
        start.append(s)
    return PatchBox(tuple(start), size)  # type: ignore[arg-type]


def clip_slices(box_start, box_stop, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices into an array of ``shape`` and into the box for their intersection (possibly empty)."""
    src, dst = [], []
    for a, b, n in zip(box_start, box_stop, shape):
        lo, hi = max(a, 0), min(b, n)
        hi = max(hi, lo)
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    return tuple(src), tuple(dst)


def crop_padded(array: np.ndarray, start_zyx, shape_zyx, pad_value=0) -> np.ndarray:
    """``array[start:start+shape]`` with out-of-range voxels set to ``pad_value`` (a copy)."""
    stop = [s + n for s, n in zip(start_zyx, shape_zyx)]
    out = np.full(tuple(shape_zyx), pad_value, dtype=array.dtype)
    src, dst = clip_slices(start_zyx, stop, array.shape)
    out[dst] = array[src]
    return out


def crop_box(array: np.ndarray, box: PatchBox, pad_value=0) -> np.ndarray:
    """The ``size^3`` patch of a model-frame array (padded with ``pad_value`` outside the frame)."""
    return crop_padded(array, box.start_zyx, (box.size,) * 3, pad_value)


def paste_add(dest: np.ndarray, dest_start_zyx, values: np.ndarray, values_start_zyx) -> None:
    """Add ``values`` (placed at frame index ``values_start_zyx``) into ``dest`` (placed at ``dest_start_zyx``).

    Only the overlap is touched; both are frame-indexed (z, y, x).
    """
    rel = [v - d for v, d in zip(values_start_zyx, dest_start_zyx)]
    stop = [r + n for r, n in zip(rel, values.shape)]
    src, dst = clip_slices(rel, stop, dest.shape)
    dest[src] += values[dst]


def blend_weights(size: int = 64, ramp: int = 8, floor: float = 0.05) -> np.ndarray:
    """(size, size, size) float32 weights for blending overlapping patches.

    1 in the interior, falling linearly to ``floor`` over ``ramp`` voxels at each face, so voxels
    that a patch sees near its border (with little context) count less than another patch's interior.
    """
    r = np.ones(size, dtype=np.float32)
    if ramp > 0:
        t = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
        r[:ramp] = floor + (1 - floor) * t
        r[size - ramp :] = r[:ramp][::-1]
    return r[:, None, None] * r[None, :, None] * r[None, None, :]


def face_neighbours(box: PatchBox, stride: int) -> list[tuple[int, int, PatchBox]]:
    """The 6 face neighbours ``(axis, sign, box)`` at ``stride`` voxels, in a fixed order (z-, z+, y-, y+, x-, x+)."""
    out = []
    for axis in range(3):
        for sign in (-1, 1):
            out.append((axis, sign, box.shifted(axis, sign * stride)))
    return out


def face_slab(size: int, axis: int, sign: int, depth: int) -> tuple[slice, slice, slice]:
    """Slices of the ``depth``-voxel slab at face (``axis``, ``sign``) of a ``size^3`` patch."""
    sl = [slice(None)] * 3
    sl[axis] = slice(0, depth) if sign < 0 else slice(size - depth, size)
    return tuple(sl)  # type: ignore[return-value]


def world_to_frame_zyx(frame: Geometry, world_xyz) -> np.ndarray:
    """LPS world mm (..., 3) as (x, y, z) -> continuous frame index (..., 3) as (z, y, x)."""
    return frame.world_to_index(np.asarray(world_xyz, dtype=float))[..., ::-1]


def frame_zyx_to_world(frame: Geometry, index_zyx) -> np.ndarray:
    """Continuous frame index (..., 3) as (z, y, x) -> LPS world mm (..., 3) as (x, y, z)."""
    return frame.index_to_world(np.asarray(index_zyx, dtype=float)[..., ::-1])


def subgrid(geometry: Geometry, start_zyx, shape_zyx) -> Geometry:
    """The grid of ``array[start:start+shape]`` (same spacing and direction, shifted origin)."""
    origin = geometry.index_to_world(np.asarray(start_zyx, dtype=float)[::-1])
    return Geometry(
        shape_zyx=tuple(shape_zyx),
        spacing_xyz_mm=geometry.spacing_xyz_mm,
        origin_xyz_mm=tuple(origin),
        direction=geometry.direction,
    )


def index_bbox_of_world_box(target: Geometry, source: Geometry, start_zyx, shape_zyx, pad: int = 1):
    """The index box ``(start_zyx, stop_zyx)`` of ``target`` covering a box of ``source`` voxels.

    The 8 corners of the source box are mapped into ``target`` indices, widened by ``pad``
    voxels and clipped to ``target``'s shape. Returns None if the result is empty.
    """
    stop = [s + n - 1 for s, n in zip(start_zyx, shape_zyx)]
    corners_zyx = np.array(
        [[z, y, x] for z in (start_zyx[0], stop[0]) for y in (start_zyx[1], stop[1]) for x in (start_zyx[2], stop[2])],
        dtype=float,
    )
    world = source.index_to_world(corners_zyx[:, ::-1])
    idx_zyx = target.world_to_index(world)[:, ::-1]
    lo = np.floor(idx_zyx.min(axis=0)).astype(int) - pad
    hi = np.ceil(idx_zyx.max(axis=0)).astype(int) + pad + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(target.shape_zyx))
    if np.any(hi <= lo):
        return None
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def resample(
    array: np.ndarray,
    source: Geometry,
    target: Geometry,
    *,
    linear: bool = True,
    default: float = 0.0,
    dtype=np.float32,
) -> np.ndarray:
    """Resample ``array`` (on ``source``, (z, y, x)) onto ``target`` in world space (SimpleITK).

    Linear interpolation (or nearest neighbour with ``linear=False``); voxels of ``target`` outside
    ``source`` get ``default``. Returns a (z, y, x) array of ``dtype``.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    img.SetSpacing(source.spacing_xyz_mm)
    img.SetOrigin(source.origin_xyz_mm)
    img.SetDirection(tuple(np.asarray(source.direction, dtype=float).ravel()))
    out = sitk.Resample(
        img,
        target.shape_xyz,
        sitk.Transform(),
        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
        target.origin_xyz_mm,
        target.spacing_xyz_mm,
        tuple(np.asarray(target.direction, dtype=float).ravel()),
        float(default),
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out).astype(dtype, copy=False)
