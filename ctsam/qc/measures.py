"""Single-mask measurements on bounding-box crops: components, HU statistics, border contact, centroid.

All functions take a mask cropped to (at least) the structure's bounding box plus the crop's
offset in the full (z, y, x) grid, so nothing here touches a full volume.
"""

from __future__ import annotations

import numpy as np

from ctsam.volume import Geometry

#: Connected components are counted with full 26-connectivity (3×3×3 structuring element).
COMPONENT_CONNECTIVITY = 26

_FACES = ("z_min", "z_max", "y_min", "y_max", "x_min", "x_max")


def component_stats(mask: np.ndarray) -> tuple[int, float | None]:
    """Number of 26-connected components and the fraction of voxels in the largest one.

    Returns ``(0, None)`` for an empty mask.
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return 0, None
    sizes = np.bincount(labels.ravel())[1:]
    return int(n), float(sizes.max() / sizes.sum())


def hu_stats(values: np.ndarray, percentiles: list[float]) -> dict:
    """Mean, standard deviation (population) and percentiles of HU ``values`` (1-D).

    Keys: ``mean``, ``std``, ``p<q>`` for each percentile q (e.g. ``p5``, ``p50``). Empty input gives
    ``None`` values.
    """
    keys = [f"p{q:g}" for q in percentiles]
    if values.size == 0:
        return {"mean": None, "std": None, **{k: None for k in keys}}
    v = values.astype(np.float64, copy=False)
    pct = np.percentile(v, percentiles) if percentiles else []
    return {"mean": float(v.mean()), "std": float(v.std()), **{k: float(p) for k, p in zip(keys, pct)}}


def border_contact(mask: np.ndarray, offset_zyx: tuple[int, int, int], shape_zyx: tuple[int, ...]) -> dict[str, int]:
    """Voxels of the mask lying on each outer face of the image grid.

    Args:
        mask: bool crop of the structure, (dz, dy, dx).
        offset_zyx: index of ``mask[0, 0, 0]`` in the full grid.
        shape_zyx: full grid shape.

    Returns:
        ``{face: voxel count}`` for the faces touched (``z_min`` = first slice, ``x_max`` = last column, ...).
    """
    out: dict[str, int] = {}
    for axis in range(3):
        lo, hi = offset_zyx[axis], offset_zyx[axis] + mask.shape[axis]
        for face, at_border, index in (
            (f"{'zyx'[axis]}_min", lo == 0, 0),
            (f"{'zyx'[axis]}_max", hi == shape_zyx[axis], -1),
        ):
            if at_border:
                count = int(np.count_nonzero(np.take(mask, index, axis=axis)))
                if count:
                    out[face] = count
    return out


def centroid_index_zyx(mask: np.ndarray, offset_zyx: tuple[int, int, int]) -> np.ndarray | None:
    """Mean voxel index (z, y, x) of the mask in the full grid, or None if empty."""
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    return np.array([i.mean() for i in idx]) + np.asarray(offset_zyx, dtype=float)


def centroid_world_lps(mask: np.ndarray, offset_zyx: tuple[int, int, int], geometry: Geometry) -> list[float] | None:
    """Centroid in LPS world mm (x, y, z): +x is the patient's left, +y posterior, +z superior."""
    c = centroid_index_zyx(mask, offset_zyx)
    if c is None:
        return None
    return [float(v) for v in geometry.index_to_world(c[::-1])]
