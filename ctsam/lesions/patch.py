"""The model's patch around one click: its grid, the CT sampled on it, and probabilities pasted back.

The patch grid keeps the CT's axes (its direction cosines, no re-orientation, as the published
3DSAM-adapter code resamples each volume along its own voxel axes), takes the model's spacing and
patch size (:class:`InputSpec` ``spacing_zyx_mm``, ``patch_size_zyx``) and puts the click exactly on
the patch voxel ``size // 2`` of every axis. Resampling one patch at a time (from the CT crop that
covers it) replaces "resample the whole CT, then crop": the same voxels, without a whole-volume copy
per lesion. Patch voxels outside the CT get ``pad_hu`` (padding at the borders). Nothing here
imports torch.
"""

from __future__ import annotations

import numpy as np

from ctsam.volume import Geometry


def patch_grid(ct: Geometry, center_world_xyz_mm, patch_size_zyx, spacing_zyx_mm) -> Geometry:
    """The patch grid: ``patch_size_zyx`` voxels of ``spacing_zyx_mm`` along the CT's axes, centred on the click."""
    spacing_xyz = np.asarray(spacing_zyx_mm, dtype=float)[::-1]
    center_xyz = np.asarray([s // 2 for s in patch_size_zyx], dtype=float)[::-1]
    direction = ct.direction_matrix
    origin = np.asarray(center_world_xyz_mm, dtype=float) - direction @ (spacing_xyz * center_xyz)
    size = [int(s) for s in patch_size_zyx]
    return Geometry(
        shape_zyx=(size[0], size[1], size[2]),
        spacing_xyz_mm=tuple(spacing_xyz),
        origin_xyz_mm=tuple(origin),
        direction=ct.direction,
    )


def patch_center_zyx(patch_size_zyx) -> tuple[int, int, int]:
    """The patch voxel (z, y, x) that holds the click."""
    return tuple(int(s) // 2 for s in patch_size_zyx)  # type: ignore[return-value]


def covering_box(target: Geometry, source: Geometry, pad: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The index box ``(start_zyx, stop_zyx)`` of ``target`` covering every voxel of ``source`` (plus ``pad``), clipped."""
    n = np.asarray(source.shape_xyz, dtype=float) - 1
    corners = np.array([[x, y, z] for x in (0, n[0]) for y in (0, n[1]) for z in (0, n[2])], dtype=float)
    idx_zyx = target.world_to_index(source.index_to_world(corners))[:, ::-1]
    lo = np.maximum(np.floor(idx_zyx.min(axis=0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(idx_zyx.max(axis=0)).astype(int) + pad + 1, np.asarray(target.shape_zyx))
    if np.any(hi <= lo):
        return None
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def subgrid(geometry: Geometry, start_zyx, stop_zyx) -> Geometry:
    """The grid of ``array[start:stop]`` on ``geometry``."""
    origin = geometry.index_to_world(np.asarray(start_zyx, dtype=float)[::-1])
    return Geometry(
        shape_zyx=tuple(b - a for a, b in zip(start_zyx, stop_zyx)),
        spacing_xyz_mm=geometry.spacing_xyz_mm,
        origin_xyz_mm=tuple(origin),
        direction=geometry.direction,
    )


def resample_onto(array: np.ndarray, source: Geometry, target: Geometry, *, default: float) -> np.ndarray:
    """Linear resampling of ``array`` (z, y, x on ``source``) onto ``target``; float32, ``default`` outside."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    img.SetSpacing(source.spacing_xyz_mm)
    img.SetOrigin(source.origin_xyz_mm)
    img.SetDirection(tuple(source.direction_matrix.ravel()))
    out = sitk.Resample(
        img,
        target.shape_xyz,
        sitk.Transform(),
        sitk.sitkLinear,
        target.origin_xyz_mm,
        target.spacing_xyz_mm,
        tuple(target.direction_matrix.ravel()),
        float(default),
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)


def sample_patch(ct_array: np.ndarray, ct: Geometry, grid: Geometry, *, pad_hu: float) -> np.ndarray:
    """The CT (HU) on the patch grid, float32; patch voxels outside the CT get ``pad_hu``."""
    box = covering_box(ct, grid, pad=2)
    if box is None:
        return np.full(grid.shape_zyx, pad_hu, dtype=np.float32)
    (z0, y0, x0), (z1, y1, x1) = box
    crop = ct_array[z0:z1, y0:y1, x0:x1]
    return resample_onto(crop, subgrid(ct, box[0], box[1]), grid, default=pad_hu)


def paste_back(prob_patch: np.ndarray, grid: Geometry, ct: Geometry) -> tuple[tuple[int, int, int], np.ndarray] | None:
    """The patch probabilities resampled onto the CT voxels the patch covers: ``(start_zyx, float32 array)``."""
    box = covering_box(ct, grid, pad=1)
    if box is None:
        return None
    return box[0], resample_onto(prob_patch, grid, subgrid(ct, box[0], box[1]), default=0.0)  # type: ignore[return-value]


def touches_faces(mask: np.ndarray) -> bool:
    """Whether a (patch) mask has a voxel on any of its 6 faces."""
    return bool(
        mask[0].any()
        or mask[-1].any()
        or mask[:, 0].any()
        or mask[:, -1].any()
        or mask[:, :, 0].any()
        or mask[:, :, -1].any()
    )
