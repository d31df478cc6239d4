"""Per-lesion measures on the CT grid: size, RECIST-style diameters, 3-D diameter, centroid, containing structure.

Distances are between voxel centres in world millimetres (a lesion of one voxel has diameters 0).

* **RECIST long axis** (``recist_long_axis_mm``): the longest distance between two voxels of the
  lesion in one axial slice, over all axial slices. "Axial" is the CT index axis closest to the
  patient's head-foot (S) direction, so sagittally acquired volumes are measured in true axial planes
  too when their axes are orthogonal.
* **RECIST short axis** (``recist_short_axis_mm``): in the slice of the long axis, the lesion's
  extent perpendicular to it (the longest chord perpendicular to the long axis for a convex lesion).
* **Longest 3-D diameter**: the longest distance between any two lesion voxels.
* **Centroid**: mean LPS world position of the lesion's voxels.

Longest distances are taken between convex-hull vertices (exact, and fast for large lesions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctsam.volume import Geometry


@dataclass(frozen=True)
class RecistDiameters:
    long_axis_mm: float
    short_axis_mm: float
    slice_index: int | None  # index along the axial axis of the slice measured (None: empty lesion)
    axial_axis: str  # "z", "y" or "x": the CT index axis taken as axial


def axial_axis(geometry: Geometry) -> int:
    """Index axis (0 = z, 1 = y, 2 = x in array order) whose world direction is closest to S."""
    s_component = np.abs(geometry.direction_matrix[2])  # row 2: the S component of the x, y, z index axes
    return 2 - int(np.argmax(s_component))


def _max_pair_distance(points: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Largest distance between two of ``points`` (n, d) and the unit vector between them."""
    if len(points) < 2:
        return 0.0, None
    candidates = points
    if len(points) > 64:
        from scipy.spatial import ConvexHull, QhullError

        try:
            candidates = points[ConvexHull(points).vertices]
        except (QhullError, ValueError):  # flat or degenerate set: fall back to every point
            candidates = points
    best, pair = -1.0, (0, 0)
    chunk = max(1, 4_000_000 // max(1, len(candidates)))
    for i0 in range(0, len(candidates), chunk):
        block = candidates[i0 : i0 + chunk]
        d2 = ((block[:, None, :] - candidates[None, :, :]) ** 2).sum(-1)
        k = int(np.argmax(d2))
        if d2.flat[k] > best:
            best = float(d2.flat[k])
            pair = (i0 + k // len(candidates), k % len(candidates))
    a, b = candidates[pair[0]], candidates[pair[1]]
    dist = float(np.sqrt(best))
    return dist, ((b - a) / dist if dist > 0 else None)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the only candidates for longest distances)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def recist_diameters(mask: np.ndarray, geometry: Geometry, start_zyx=(0, 0, 0)) -> RecistDiameters:
    """RECIST long and short axes of ``mask`` (a crop of the CT grid starting at ``start_zyx``)."""
    axis = axial_axis(geometry)
    names = "zyx"
    if not mask.any():
        return RecistDiameters(0.0, 0.0, None, names[axis])
    m = geometry.direction_matrix @ np.diag(geometry.spacing_xyz_mm)  # world = m @ index_xyz + origin
    best = RecistDiameters(-1.0, 0.0, None, names[axis])
    occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    for k in occupied:
        sl = [slice(None)] * 3
        sl[axis] = slice(int(k), int(k) + 1)
        slab = mask[tuple(sl)]
        edge = np.argwhere(_boundary2d(slab, axis))
        pts_zyx = edge.astype(float)
        pts_zyx[:, axis] = k
        world = (pts_zyx[:, ::-1] + np.asarray(start_zyx, dtype=float)[::-1]) @ m.T
        length, unit = _max_pair_distance(world)
        if length > best.long_axis_mm + 1e-9:
            short = 0.0
            if unit is not None:
                all_zyx = np.argwhere(slab).astype(float)
                all_zyx[:, axis] = k
                all_world = (all_zyx[:, ::-1] + np.asarray(start_zyx, dtype=float)[::-1]) @ m.T
                normal = m[:, 2 - axis] / np.linalg.norm(m[:, 2 - axis])
                perp = np.cross(normal, unit)
                proj = all_world @ perp
                short = float(proj.max() - proj.min())
            best = RecistDiameters(length, short, int(k) + int(start_zyx[axis]), names[axis])
    return best


def _boundary2d(slab: np.ndarray, axis: int) -> np.ndarray:
    """In-plane boundary voxels of a one-voxel-thick slab (the axial axis has length 1)."""
    from scipy import ndimage

    plane = slab.squeeze(axis)
    edge = plane & ~ndimage.binary_erosion(plane, border_value=0)
    return np.expand_dims(edge, axis)


def longest_diameter_mm(mask: np.ndarray, geometry: Geometry, start_zyx=(0, 0, 0)) -> float:
    """Longest distance (mm) between two voxel centres of ``mask`` (a crop starting at ``start_zyx``)."""
    if not mask.any():
        return 0.0
    edge = np.argwhere(_boundary(mask)).astype(float) + np.asarray(start_zyx, dtype=float)
    world = geometry.index_to_world(edge[:, ::-1])
    return _max_pair_distance(world)[0]


def centroid_world_mm(mask: np.ndarray, geometry: Geometry, start_zyx=(0, 0, 0)) -> tuple[float, float, float] | None:
    """Mean LPS world position (x, y, z) of the voxels of ``mask``; None when empty."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None
    mean_zyx = idx.mean(axis=0) + np.asarray(start_zyx, dtype=float)
    w = geometry.index_to_world(mean_zyx[::-1])
    return float(w[0]), float(w[1]), float(w[2])


def containing_structure(mask: np.ndarray, labels_crop: np.ndarray, names: dict[int, str]) -> tuple[str | None, float]:
    """The structure of ``labels_crop`` holding most of ``mask``'s voxels, and the fraction it holds.

    ``(None, 0.0)`` when the lesion lies in no labelled structure (or is empty); ties go to the
    lower label value.
    """
    n = int(mask.sum())
    if n == 0:
        return None, 0.0
    values = labels_crop[mask].astype(np.int64)
    counts = np.bincount(values)
    counts[0] = 0
    if counts.sum() == 0:
        return None, 0.0
    best = int(np.argmax(counts))
    return names.get(best, f"label_{best}"), float(counts[best]) / n
