"""Tumours in the demo phantoms: liver and kidney lesions of varied size and contrast, with known truth.

Each phantom gets 1-3 liver tumours and 1-2 kidney tumours, drawn from their own random stream
(:func:`lesion_rng`: ``default_rng([seed, index, LESION_STREAM])``), so adding lesions leaves every other
draw of the phantom (organ placement, noise, coarse errors) unchanged. A lesion is a slightly irregular
ellipsoid (diameter 5-30 mm, limited by what its organ can hold) **inside** its organ: its centre is a
voxel at least one radius (plus a margin) from the organ's boundary, and its mask is clipped to the
organ. Its contrast is hypo- or hyper-dense against the organ (-55 .. -12 HU or +18 .. +60 HU); the
lesion HU replaces the organ's before the phantom's partial-volume blur and noise, like any structure.

The anatomy truth is unchanged (a tumour stays labelled as its organ, as TotalSegmentator's organ
masks include tumours). The lesion truth is a separate map (value = lesion id), and each lesion has
one click, its most interior voxel, in world LPS mm -- the ``ctsam lesions --clicks`` table format::

    lesion_id  x  y  z  label          (label: liver_tumor | kidney_tumor)

Arrays are (z, y, x); world coordinates LPS mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctsam.demo.structures import ORGANS

#: third seed word of the lesion random stream (distinct from the phantom's stream ``[seed, index]``)
LESION_STREAM = 7001
LESION_COLUMNS = ("lesion_id", "x", "y", "z", "label")
LESION_LABELS = {"liver": "liver_tumor", "kidney_left": "kidney_tumor", "kidney_right": "kidney_tumor"}
DIAMETER_RANGE_MM = (5.0, 30.0)
#: HU offsets from the organ: hypodense and hyperdense ranges
HYPO_DELTA_HU = (-55.0, -12.0)
HYPER_DELTA_HU = (18.0, 60.0)
EDGE_MARGIN_MM = 1.5


@dataclass(frozen=True)
class Lesion:
    """One planted lesion.

    Attributes:
        lesion_id: value in the lesion truth map (1, 2, ...).
        organ: the host structure's name (liver, kidney_left, kidney_right).
        label: liver_tumor or kidney_tumor.
        diameter_mm: the drawn (mean) diameter before clipping to the organ.
        delta_hu: lesion HU minus the organ's HU (negative = hypodense).
        click_zyx: the most interior voxel of the painted lesion (index on the phantom grid).
        click_xyz_mm: the same point in world LPS mm.
        voxels: voxels of the painted lesion.
    """

    lesion_id: int
    organ: str
    label: str
    diameter_mm: float
    delta_hu: float
    click_zyx: tuple[int, int, int]
    click_xyz_mm: tuple[float, float, float]
    voxels: int

    @property
    def contrast(self) -> str:
        return "hypodense" if self.delta_hu < 0 else "hyperdense"

    def to_dict(self) -> dict:
        return {
            "lesion_id": self.lesion_id,
            "organ": self.organ,
            "label": self.label,
            "diameter_mm": round(self.diameter_mm, 2),
            "delta_hu": round(self.delta_hu, 1),
            "contrast": self.contrast,
            "click_xyz_mm": [round(v, 3) for v in self.click_xyz_mm],
            "voxels": self.voxels,
        }


def lesion_rng(seed: int, index: int) -> np.random.Generator:
    """The lesion random stream of demo case ``index`` (1-based) of cohort ``seed``."""
    return np.random.default_rng([int(seed), int(index), LESION_STREAM])


def _spacing_zyx(geometry) -> np.ndarray:
    return np.array(list(reversed(geometry.spacing_xyz_mm)), dtype=float)


def _place_one(
    rng: np.random.Generator,
    organ_mask: np.ndarray,
    taken: np.ndarray,
    spacing_zyx: np.ndarray,
) -> tuple[np.ndarray, float] | None:
    """A lesion mask inside ``organ_mask`` avoiding ``taken``, and its drawn diameter; None if none fits."""
    from scipy import ndimage

    free = organ_mask & ~ndimage.binary_dilation(taken, iterations=2)
    if not free.any():
        return None
    depth_mm = ndimage.distance_transform_edt(free, sampling=spacing_zyx)
    max_diameter = 2.0 * (float(depth_mm.max()) - EDGE_MARGIN_MM)
    lo, hi = DIAMETER_RANGE_MM
    if max_diameter < lo:
        return None
    # log-uniform diameter: small lesions are as common as large ones per octave
    diameter = float(np.exp(rng.uniform(np.log(lo), np.log(min(hi, max_diameter)))))
    radius = diameter / 2.0
    candidates = np.argwhere(depth_mm >= radius + EDGE_MARGIN_MM)
    if not len(candidates):
        candidates = np.argwhere(depth_mm >= depth_mm.max() - 1e-6)
    centre = candidates[int(rng.integers(len(candidates)))]
    radii_mm = radius * rng.uniform(0.8, 1.2, size=3)
    # irregular outline: a smooth angular modulation of the radius
    lobes = rng.normal(0.0, 0.08, size=3)
    reach = np.ceil(radii_mm.max() * 1.3 / spacing_zyx).astype(int) + 1
    lo_idx = np.maximum(centre - reach, 0)
    hi_idx = np.minimum(centre + reach + 1, organ_mask.shape)
    grids = np.meshgrid(
        *[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo_idx, hi_idx, centre, spacing_zyx)], indexing="ij"
    )
    r = np.sqrt(sum((g / rr) ** 2 for g, rr in zip(grids, radii_mm)))
    dist = np.sqrt(sum(g**2 for g in grids)) + 1e-6
    modulation = 1.0 + sum(lb * (g / dist) for lb, g in zip(lobes, grids))
    sub = r <= modulation
    mask = np.zeros(organ_mask.shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo_idx, hi_idx))] = sub
    mask &= free
    if not mask.any():
        return None
    return mask, diameter


def plant_lesions(
    rng: np.random.Generator,
    labels: np.ndarray,
    hu: np.ndarray,
    geometry,
) -> tuple[np.ndarray, list[Lesion]]:
    """Draw and paint lesions into ``hu`` (the phantom's float HU canvas, modified in place).

    Args:
        rng: the lesion stream (:func:`lesion_rng`).
        labels: (z, y, x) anatomy labels (TotalSegmentator ids; not modified).
        hu: (z, y, x) float HU canvas before blur and noise.
        geometry: the phantom grid.

    Returns:
        ``(truth, lesions)``: (z, y, x) uint8 map (value = lesion id) and the lesions in id order.
    """
    from scipy import ndimage

    spacing = _spacing_zyx(geometry)
    truth = np.zeros(labels.shape, dtype=np.uint8)
    lesions: list[Lesion] = []
    kidney = "kidney_left" if rng.random() < 0.5 else "kidney_right"
    plan = ["liver"] * int(rng.integers(1, 4)) + [kidney] * int(rng.integers(1, 3))
    for organ in plan:
        organ_mask = labels == ORGANS[organ]
        placed = _place_one(rng, organ_mask, truth > 0, spacing)
        hypo = rng.random() < 0.6
        delta = float(rng.uniform(*(HYPO_DELTA_HU if hypo else HYPER_DELTA_HU)))
        if placed is None:
            continue
        mask, diameter = placed
        lesion_id = len(lesions) + 1
        organ_hu = float(np.median(hu[organ_mask & ~mask])) if (organ_mask & ~mask).any() else float(hu[mask].mean())
        hu[mask] = organ_hu + delta
        truth[mask] = lesion_id
        depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        click = np.unravel_index(int(np.argmax(depth)), depth.shape)
        click_zyx = (int(click[0]), int(click[1]), int(click[2]))
        world = geometry.index_to_world(np.array([click_zyx[2], click_zyx[1], click_zyx[0]], dtype=float))
        click_xyz_mm = (float(world[0]), float(world[1]), float(world[2]))
        lesions.append(
            Lesion(
                lesion_id=lesion_id,
                organ=organ,
                label=LESION_LABELS[organ],
                diameter_mm=diameter,
                delta_hu=delta,
                click_zyx=click_zyx,
                click_xyz_mm=click_xyz_mm,
                voxels=int(mask.sum()),
            )
        )
    return truth, lesions


def lesion_label_table(lesions: list[Lesion]) -> dict[int, str]:
    """``{lesion id: label}`` for the lesion truth map's label table."""
    return {les.lesion_id: les.label for les in lesions}


def lesions_tsv_text(lesions: list[Lesion]) -> str:
    """The click table (``ctsam lesions --clicks`` format): lesion_id, x, y, z (LPS mm), label."""
    lines = ["\t".join(LESION_COLUMNS)]
    for les in lesions:
        x, y, z = les.click_xyz_mm
        lines.append(f"{les.lesion_id}\t{x:.3f}\t{y:.3f}\t{z:.3f}\t{les.label}")
    return "\n".join(lines) + "\n"
