"""Mask measures, one definition each, used by every stage: Dice, bounding boxes, edges, surface distances.

A shared layer (imports numpy/scipy only): seeding, refinement, fusion, QC, evaluation and the
benchmarks all measure masks through this module.

* :func:`dice` / :func:`dice_or_none` / :func:`dice_from_counts` -- the one Dice;
* :func:`box_union`, :func:`box_intersection`, :func:`grow_box`, :func:`padded_crop` -- bounding boxes
  as tuples of slices (``scipy.ndimage.find_objects`` boxes);
* :func:`edge_voxels` -- edge voxels of a mask;
* :func:`compare_masks` -- the pinned agreement metrics below (QC's coarse-vs-final agreement).

ctsam pins MONAI's conventions (``monai.metrics``, 1.6) so numbers can be compared with published
MONAI-based evaluations; the tests check every value against MONAI and the NSD also against
DeepMind's ``surface-distance``. The computations are our own and work on bounding-box crops:
each pair of masks is cropped to the joint bounding box plus ``margin`` voxels (zero-padded where
the box leaves the image), which gives results identical to the uncropped computation.

Notation: P = final (predicted) mask, R = reference (coarse) mask, spacing in mm along the array
axes (z, y, x).

* **Dice** ``= 2 |P ∩ R| / (|P| + |R|)`` over voxels.
* **Edge voxels** (for HD95 and MSD): ``edge(M) = M & ~erode(M)`` with the 6-neighbour cross and
  zero outside the image (``scipy.ndimage.binary_erosion`` defaults, as MONAI).
* **Directed distances** ``D_PR = {d(p, edge(R)) : p in edge(P)}``: exact Euclidean distance in mm
  from each edge voxel centre of P to the nearest edge voxel centre of R (a KD-tree, as MONAI on CPU).
* **HD95** ``= max(q95(D_PR), q95(D_RP))`` where ``q95`` is the 95th percentile with linear
  interpolation (``torch.quantile`` / ``numpy.percentile`` "linear") over edge *voxels* (not
  surfel areas -- DeepMind's ``compute_robust_hausdorff`` differs; medpy pools both sets).
* **MSD** (mean symmetric surface distance, MONAI ``compute_average_surface_distance(symmetric=True)``)
  ``= mean(D_PR ∪ D_RP)`` over the pooled edge-voxel distances.
* **NSD at tolerance τ mm** (surface Dice, MONAI ``compute_surface_dice(use_subvoxels=True)``,
  equal to DeepMind's ``compute_surface_dice_at_tolerance``): the boundary is represented by the
  2×2×2 "cube" positions whose 8 corners are neither all inside nor all outside; each carries the
  marching-cubes surfel area of its neighbourhood code for the voxel spacing. Distances are taken
  between cube positions of P and R;
  ``NSD = (area{p : d(p, ∂R) <= τ} + area{r : d(r, ∂P) <= τ}) / (area(∂P) + area(∂R))``.

Empty masks are never averaged silently: :func:`compare_masks` returns a ``status`` and the values
MONAI would give where they are defined (see :class:`Agreement`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Statuses of a mask comparison.
STATUS_OK = "ok"
STATUS_BOTH_EMPTY = "both_empty"
STATUS_FINAL_EMPTY = "final_empty"
STATUS_REFERENCE_EMPTY = "reference_empty"

DEFINITIONS = {
    "dice": "2|P∩R|/(|P|+|R|) over voxels",
    "hd95_mm": (
        "MONAI convention: max over both directions of the 95th percentile (linear interpolation) of "
        "exact Euclidean distances (mm) from each edge voxel (M & ~erode6(M)) to the nearest edge voxel of "
        "the other mask"
    ),
    "msd_mm": "MONAI symmetric average surface distance: mean of the pooled edge-voxel distances of both directions",
    "nsd": (
        "MONAI compute_surface_dice(use_subvoxels=True) = DeepMind surface Dice at tolerance: "
        "marching-cubes surfel areas of 2x2x2 neighbourhood codes; (area within tau of the other surface, both "
        "directions) / (total area of both surfaces)"
    ),
    "empty": (
        "both_empty: every metric null; final_empty/reference_empty: dice 0, nsd 0, hd95/msd null "
        "(distance to an empty surface is undefined)"
    ),
}


@dataclass(frozen=True)
class Agreement:
    """Agreement of a final mask P with a reference mask R.

    Attributes:
        status: ``ok``, ``both_empty``, ``final_empty`` (P empty) or ``reference_empty`` (R empty).
        dice: Dice coefficient; 0 when exactly one mask is empty, None when both are.
        hd95_mm: pinned HD95 in mm; None unless both masks are non-empty.
        msd_mm: mean symmetric surface distance in mm; None unless both are non-empty.
        nsd: normalised surface Dice at ``nsd_tolerance_mm``; 0 when exactly one mask is empty.
        nsd_tolerance_mm: the tolerance τ used.
        voxels_final, voxels_reference, voxels_intersection: voxel counts.
    """

    status: str
    dice: float | None
    hd95_mm: float | None
    msd_mm: float | None
    nsd: float | None
    nsd_tolerance_mm: float
    voxels_final: int
    voxels_reference: int
    voxels_intersection: int

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------- crops
Box = tuple[slice, ...]


def box_union(a: Box | None, b: Box | None) -> Box | None:
    """Smallest box holding both boxes (each a tuple of slices with explicit start/stop, or None)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def box_intersection(a: Box, b: Box) -> Box | None:
    """The common part of two boxes, or None when they do not overlap."""
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return None if any(s.stop <= s.start for s in out) else out


def grow_box(box: Box, by: Sequence[int], shape: Sequence[int]) -> Box:
    """``box`` grown by ``by[i]`` voxels on both sides of axis i, clipped to an array of ``shape``."""
    return tuple(slice(max(s.start - b, 0), min(s.stop + b, n)) for s, b, n in zip(box, by, shape))


def padded_crop(array: np.ndarray, box: tuple[slice, ...], margin: int) -> np.ndarray:
    """``array[box]`` grown by ``margin`` voxels on every side, zero-filled outside ``array``.

    Returns a new array of shape ``box size + 2 * margin`` (same dtype as ``array``).
    """
    out_shape = tuple(s.stop - s.start + 2 * margin for s in box)
    out = np.zeros(out_shape, dtype=array.dtype)
    src, dst = [], []
    for s, n in zip(box, array.shape):
        lo, hi = s.start - margin, s.stop + margin
        src_lo, src_hi = max(lo, 0), min(hi, n)
        src.append(slice(src_lo, src_hi))
        dst.append(slice(src_lo - lo, src_lo - lo + (src_hi - src_lo)))
    out[tuple(dst)] = array[tuple(src)]
    return out


# ---------------------------------------------------------------------------------------- edges
def edge_voxels(mask: np.ndarray) -> np.ndarray:
    """Edge voxels ``M & ~erode(M)`` (6-neighbour cross, zero outside the array), bool, same shape."""
    m = np.asarray(mask, dtype=bool)
    interior = np.zeros_like(m)
    if min(m.shape) >= 3:
        c = m[1:-1, 1:-1, 1:-1]
        interior[1:-1, 1:-1, 1:-1] = (
            c
            & m[:-2, 1:-1, 1:-1]
            & m[2:, 1:-1, 1:-1]
            & m[1:-1, :-2, 1:-1]
            & m[1:-1, 2:, 1:-1]
            & m[1:-1, 1:-1, :-2]
            & m[1:-1, 1:-1, 2:]
        )
    return m & ~interior


@functools.cache
def _normals_table() -> np.ndarray:
    """(256, 4, 3) marching-cubes surfel normals (see :mod:`ctsam.masks.surfel_table`)."""
    from ctsam.masks.surfel_table import normals_table

    return normals_table()


@functools.cache
def surfel_area_table(spacing_zyx_mm: tuple[float, float, float]) -> np.ndarray:
    """(256,) surfel area in mm² for every neighbourhood code at this spacing (array axis order)."""
    s0, s1, s2 = (float(v) for v in spacing_zyx_mm)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.linalg.norm(_normals_table() * scale, axis=-1).sum(axis=-1)


def neighbourhood_codes(mask: np.ndarray) -> np.ndarray:
    """uint8 codes of every 2×2×2 cube of ``mask``; shape ``mask.shape - 1``.

    Bit weights follow MONAI's ``ENCODING_KERNEL[3]``: corner (a, b, c) in {0,1}³ has weight
    ``2 ** (7 - (4a + 2b + c))``. ``mask`` must be zero on its outer layer (use a margin ≥ 1).
    """
    m = np.asarray(mask, dtype=np.uint8)
    code = np.zeros(tuple(n - 1 for n in m.shape), dtype=np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                weight = 1 << (7 - (4 * a + 2 * b + c))
                part = m[a : a + code.shape[0], b : b + code.shape[1], c : c + code.shape[2]]
                code |= part * np.uint8(weight)
    return code


def _points_mm(mask: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> np.ndarray:
    return np.argwhere(mask).astype(np.float64) * np.asarray(spacing_zyx_mm, dtype=np.float64)


def _workers() -> int:
    """CPUs this process may use (respects SLURM/cgroup CPU sets)."""
    import os

    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _nearest(from_pts: np.ndarray, to_pts: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance from each of ``from_pts`` to the nearest of ``to_pts`` (mm)."""
    from scipy.spatial import cKDTree

    return cKDTree(to_pts, leafsize=32).query(from_pts, k=1, workers=_workers())[0]


# ---------------------------------------------------------------------------------------- metrics
def dice_from_counts(intersection: int, size_a: int, size_b: int) -> float:
    """Dice ``2 |A ∩ B| / (|A| + |B|)`` from voxel counts; 1.0 when both masks are empty."""
    return 1.0 if size_a + size_b == 0 else 2.0 * intersection / (size_a + size_b)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty (two empty masks agree)."""
    return dice_from_counts(int(np.count_nonzero(a & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b)))


def dice_or_none(final: np.ndarray, reference: np.ndarray) -> float | None:
    """Dice of two bool masks; None when both are empty (QC: nothing to compare)."""
    a, b = int(np.count_nonzero(final)), int(np.count_nonzero(reference))
    if a + b == 0:
        return None
    return dice_from_counts(int(np.count_nonzero(final & reference)), a, b)


def surface_distances(
    final: np.ndarray, reference: np.ndarray, spacing_zyx_mm: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed edge-voxel distances (mm): ``(D_PR, D_RP)``. Both masks must be non-empty and
    zero on their outer layer (cropped with a margin ≥ 1)."""
    ep, er = edge_voxels(final), edge_voxels(reference)
    pp, pr = _points_mm(ep, spacing_zyx_mm), _points_mm(er, spacing_zyx_mm)
    return _nearest(pp, pr), _nearest(pr, pp)


def hd95_from_distances(d_pr: np.ndarray, d_rp: np.ndarray, percentile: float = 95.0) -> float:
    return float(max(np.percentile(d_pr, percentile), np.percentile(d_rp, percentile)))


def nsd(
    final: np.ndarray, reference: np.ndarray, spacing_zyx_mm: tuple[float, float, float], tolerance_mm: float
) -> float:
    """Normalised surface Dice (subvoxel surfels). Both masks non-empty, zero outer layer."""
    table = surfel_area_table(tuple(float(v) for v in spacing_zyx_mm))
    cp, cr = neighbourhood_codes(final), neighbourhood_codes(reference)
    bp = (cp != 0) & (cp != 255)
    br = (cr != 0) & (cr != 255)
    area_p, area_r = table[cp[bp]], table[cr[br]]
    pp, pr = _points_mm(bp, spacing_zyx_mm), _points_mm(br, spacing_zyx_mm)
    d_pr, d_rp = _nearest(pp, pr), _nearest(pr, pp)
    total = area_p.sum() + area_r.sum()
    if total == 0:
        return float("nan")
    ok = area_p[d_pr <= tolerance_mm].sum() + area_r[d_rp <= tolerance_mm].sum()
    return float(ok / total)


def compare_masks(
    final: np.ndarray,
    reference: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    *,
    nsd_tolerance_mm: float,
    margin: int = 1,
    cropped: bool = False,
) -> Agreement:
    """All pinned agreement metrics of two bool masks of the same shape (z, y, x).

    Args:
        final, reference: bool masks P and R.
        spacing_zyx_mm: voxel spacing along the array axes, mm.
        nsd_tolerance_mm: NSD tolerance τ in mm.
        margin: voxels of zero padding around the joint bounding box (≥ 1).
        cropped: the caller already cropped both to the joint box + ``margin`` (zero outer layer);
            skips the crop.
    """
    if final.shape != reference.shape:
        raise ValueError(f"mask shapes differ: {final.shape} vs {reference.shape}")
    spacing = (float(spacing_zyx_mm[0]), float(spacing_zyx_mm[1]), float(spacing_zyx_mm[2]))
    if not cropped:
        from scipy import ndimage

        union = (final | reference).astype(np.uint8)
        box = ndimage.find_objects(union)
        if box:
            final = padded_crop(np.asarray(final, dtype=bool), box[0], max(margin, 1))
            reference = padded_crop(np.asarray(reference, dtype=bool), box[0], max(margin, 1))
    n_p, n_r = int(np.count_nonzero(final)), int(np.count_nonzero(reference))
    n_i = int(np.count_nonzero(final & reference))
    tol = float(nsd_tolerance_mm)
    if n_p == 0 and n_r == 0:
        return Agreement(STATUS_BOTH_EMPTY, None, None, None, None, tol, n_p, n_r, n_i)
    if n_p == 0 or n_r == 0:
        status = STATUS_FINAL_EMPTY if n_p == 0 else STATUS_REFERENCE_EMPTY
        return Agreement(status, 0.0, None, None, 0.0, tol, n_p, n_r, n_i)
    d_pr, d_rp = surface_distances(final, reference, spacing)
    return Agreement(
        STATUS_OK,
        dice=dice_from_counts(n_i, n_p, n_r),
        hd95_mm=hd95_from_distances(d_pr, d_rp),
        msd_mm=float(np.concatenate([d_pr, d_rp]).mean()),
        nsd=nsd(final, reference, spacing, nsd_tolerance_mm),
        nsd_tolerance_mm=tol,
        voxels_final=n_p,
        voxels_reference=n_r,
        voxels_intersection=n_i,
    )
