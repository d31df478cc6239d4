"""Pure geometry for per-structure radiomics: bounding boxes, pyradiomics' resampling grid, crops.

Index conventions: numpy arrays are ``(z, y, x)``; ITK/pyradiomics indices, sizes and spacings are
``(x, y, z)``. Every name says which (``start_xyz``, ``stop_zyx``, ...). World coordinates are LPS mm.

Why this module exists: pyradiomics resamples only a box around the mask, on a grid anchored to the
*input image's* corner (``imageoperations.resampleImage``). Running pyradiomics on a crop would move
that anchor and change every resampled value. So ctsam computes the whole-volume grid here (the same
arithmetic as pyradiomics, in the same order, so the numbers are bit-identical), resamples a crop onto
it, and hands pyradiomics the already-resampled images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Extra input voxels kept around the region an interpolator reads, per side. Cubic B-spline
#: interpolation (pyradiomics' default ``sitkBSpline``) first runs a recursive prefilter over the
#: whole input, whose influence decays as 0.268**distance; 20 voxels make a crop's border effect
#: ~4e-12 of the intensity range, far below the 1e-6 relative agreement ctsam promises.
INTERPOLATION_MARGIN_VOXELS = 20


@dataclass(frozen=True)
class Box:
    """A voxel box ``[start, stop)`` in array order (z, y, x)."""

    start_zyx: tuple[int, int, int]
    stop_zyx: tuple[int, int, int]

    @property
    def size_zyx(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start_zyx, self.stop_zyx))  # type: ignore[return-value]

    @property
    def start_xyz(self) -> tuple[int, int, int]:
        return tuple(reversed(self.start_zyx))  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        return tuple(reversed(self.size_zyx))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start_zyx, self.stop_zyx))  # type: ignore[return-value]

    def grow(self, margin_zyx: tuple[int, int, int], shape_zyx: tuple[int, int, int]) -> Box:
        """The box enlarged by ``margin_zyx`` voxels per side, clipped to an array of ``shape_zyx``."""
        start = tuple(max(0, a - m) for a, m in zip(self.start_zyx, margin_zyx))
        stop = tuple(min(s, b + m) for b, m, s in zip(self.stop_zyx, margin_zyx, shape_zyx))
        return Box(start, stop)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StructureExtent:
    """One label's bounding box and voxel count in the whole label map."""

    label: int
    box: Box
    n_voxels: int


def structure_extents(labels_zyx: np.ndarray) -> dict[int, StructureExtent]:
    """Bounding box and voxel count of every non-zero label, in one pass each (no per-label scans).

    ``labels_zyx``: integer label array (z, y, x). Returns ``{label: StructureExtent}`` for labels
    with at least one voxel.
    """
    from scipy import ndimage

    arr = np.asarray(labels_zyx)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"label array must be integer, got {arr.dtype}")
    counts = np.bincount(arr.ravel().astype(np.intp, copy=False))
    out: dict[int, StructureExtent] = {}
    for index, slc in enumerate(ndimage.find_objects(arr), start=1):
        if slc is None:
            continue
        box = Box(tuple(s.start for s in slc), tuple(s.stop for s in slc))  # type: ignore[arg-type]
        out[index] = StructureExtent(label=index, box=box, n_voxels=int(counts[index]))
    return out


@dataclass(frozen=True)
class ResampleGrid:
    """The output grid of pyradiomics' ``resampleImage`` for one structure (ITK order, LPS mm)."""

    size_xyz: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major, as SimpleITK's GetDirection()

    def corner_points_xyz_mm(self) -> np.ndarray:
        """World (LPS mm) positions of the 8 corner voxel centres, shape (8, 3)."""
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        hi = np.asarray(self.size_xyz, dtype=float) - 1
        corners = np.array([[i, j, k] for i in (0, hi[0]) for j in (0, hi[1]) for k in (0, hi[2])], dtype=float)
        return np.asarray(self.origin_xyz_mm) + (corners * np.asarray(self.spacing_xyz_mm)) @ d.T


def effective_resampled_spacing(resampled_spacing_xyz_mm, mask_spacing_xyz_mm, bbox_size_xyz) -> np.ndarray:
    """pyradiomics' target spacing: 0 means "keep the mask's spacing", as does a 1-voxel-thin bbox axis."""
    mask_spacing = np.array(mask_spacing_xyz_mm, dtype=float)
    rs = np.array(resampled_spacing_xyz_mm)
    if rs.shape != mask_spacing.shape:
        raise ValueError(f"resampledPixelSpacing needs {mask_spacing.size} values, got {rs.tolist()}")
    rs = np.where(rs == 0, mask_spacing, rs)
    return np.where(np.asarray(bbox_size_xyz) != 1, rs, mask_spacing)


def resample_grid(
    mask_image,
    bbox_start_xyz,
    bbox_size_xyz,
    resampled_spacing_xyz_mm,
    *,
    pad_distance: int = 5,
) -> ResampleGrid:
    """The grid pyradiomics ``resampleImage`` would build for a whole-volume mask.

    ``mask_image`` is the whole label map as a SimpleITK image (only its geometry is used);
    ``bbox_*`` is the structure's bounding box in its index space (x, y, z). The arithmetic follows
    ``radiomics.imageoperations.resampleImage`` step by step (same numpy operations, same order, origin
    via ITK's ``TransformContinuousIndexToPhysicalPoint``) so the grid is bit-identical.
    """
    mask_spacing = np.array(mask_image.GetSpacing())
    mask_size = np.array(mask_image.GetSize())
    bb_start = np.asarray(bbox_start_xyz)
    bb_size = np.asarray(bbox_size_xyz)
    rs = effective_resampled_spacing(resampled_spacing_xyz_mm, mask_spacing, bb_size)
    spacing_ratio = mask_spacing / rs
    lo = np.floor((bb_start - 0.5) * spacing_ratio - pad_distance)
    hi = np.ceil((bb_start + bb_size - 0.5) * spacing_ratio + pad_distance)
    max_hi = np.ceil(mask_size * spacing_ratio) - 1
    lo = np.where(lo < 0, 0, lo)
    hi = np.where(hi > max_hi, max_hi, hi)
    new_size = np.array(hi - lo + 1, dtype="int").tolist()
    lo_in_mask_index = lo / spacing_ratio
    origin_index = np.array(0.5 * (rs - mask_spacing) / mask_spacing)
    cropped_origin_index = origin_index + lo_in_mask_index
    origin = mask_image.TransformContinuousIndexToPhysicalPoint(cropped_origin_index)
    return ResampleGrid(
        size_xyz=tuple(int(v) for v in new_size),  # type: ignore[arg-type]
        spacing_xyz_mm=tuple(float(v) for v in rs),  # type: ignore[arg-type]
        origin_xyz_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in mask_image.GetDirection()),
    )


def input_box_for_grid(image, grid: ResampleGrid, margin_voxels: int = INTERPOLATION_MARGIN_VOXELS) -> Box:
    """The box of ``image`` (a SimpleITK image) an interpolator needs to fill ``grid``, plus a margin.

    Maps the grid's corner voxel centres into ``image``'s continuous index space, rounds outwards,
    adds ``margin_voxels`` per side (the interpolation kernel's reach plus prefilter decay) and clips
    to the image.
    """
    cidx = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in grid.corner_points_xyz_mm()])
    lo_xyz = np.floor(cidx.min(axis=0)).astype(int) - margin_voxels
    hi_xyz = np.ceil(cidx.max(axis=0)).astype(int) + margin_voxels + 1
    size_xyz = np.array(image.GetSize())
    lo_xyz = np.clip(lo_xyz, 0, size_xyz)
    hi_xyz = np.clip(hi_xyz, 0, size_xyz)
    return Box(tuple(int(v) for v in lo_xyz[::-1]), tuple(int(v) for v in hi_xyz[::-1]))  # type: ignore[arg-type]


def margin_voxels_zyx(margin_mm: float, spacing_xyz_mm, minimum_voxels: int = 0) -> tuple[int, int, int]:
    """``margin_mm`` in voxels per axis (z, y, x), rounded up, at least ``minimum_voxels``."""
    sp = np.asarray(spacing_xyz_mm, dtype=float)[::-1]
    return tuple(int(max(minimum_voxels, np.ceil(margin_mm / s - 1e-9))) for s in sp)  # type: ignore[return-value]
