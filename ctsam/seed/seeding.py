"""Automatic click prompts from a coarse label map (``ctsam seed``).

For every selected structure and every connected component above ``min_component_ml``:

* the component's bounding box is cut into tiles of at most ``tile_size_mm`` per axis (one tile
  when it fits in one patch);
* every tile holding at least ``tile_min_ml`` of the component gets a **positive click at its most
  interior point** (maximum of the Euclidean distance transform in mm, computed with the CT spacing,
  with the tile border counted as outside);
* **negative clicks** go to the most interior points of the other labels that lie within
  ``negative_margin_mm`` of the tile's part of the mask (largest neighbours first, at most
  ``max_negatives``).

Everything is computed on bounding-box crops: ``scipy.ndimage.find_objects`` runs once on the
label map, so a 107-label whole-body CT never costs 107 full-volume passes. Arrays are (z, y, x)
on the CT grid; clicks are written in LPS world mm. The output is deterministic: fixed iteration
order, ties broken by the first voxel in C order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctsam.errors import InputDataError
from ctsam.seed.prompts import CasePrompts, Click, PromptSet, StructureInfo
from ctsam.volume import Geometry, LabelMap

log = logging.getLogger(__name__)

_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # 26-connectivity: thin ribs stay one piece


@dataclass(frozen=True)
class SeedSettings:
    """Seeding parameters (config section ``seed``); sizes in ml and mm."""

    include: tuple[str, ...] | None = None  # None: every structure of the label table
    exclude: tuple[str, ...] = ()
    min_component_ml: float = 0.5
    max_components: int = 6
    tile_size_mm: float = 84.0
    tile_min_ml: float = 1.0
    negative_margin_mm: float = 15.0
    max_negatives: int = 6
    min_negative_ml: float = 0.1
    working_spacing_mm: float = 1.5
    max_prompt_sets: int | None = None  # None: SETS_PER_STRUCTURE per seeded structure

    @classmethod
    def from_config(cls, config: dict) -> SeedSettings:
        """Settings from a full config: section ``seed`` for sizes, ``structures`` for which are refined."""
        from ctsam.labels import refined_structures

        keys = set(cls.__dataclass_fields__) - {"include", "exclude"}
        kw = {k: v for k, v in config["seed"].items() if k in keys}
        return cls(include=tuple(refined_structures(config)), **kw)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def interior_point(mask: np.ndarray, spacing_zyx_mm) -> tuple[int, int, int]:
    """Index (z, y, x) of the voxel of ``mask`` farthest (in mm) from the outside.

    Voxels beyond the array edge count as outside. Ties go to the first voxel in C order.
    Raises ValueError on an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("interior_point of an empty mask")
    # the distance transform only needs the mask's own bounding box (plus a 1-voxel outside rim)
    lo = [int(np.nonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))[0][[0, -1]][0]) for a in range(3)]
    hi = [int(np.nonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))[0][-1]) + 1 for a in range(3)]
    padded = np.pad(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], 1)
    dist = ndimage.distance_transform_edt(padded, sampling=spacing_zyx_mm)
    z, y, x = np.unravel_index(int(np.argmax(dist)), padded.shape)
    return int(z) - 1 + lo[0], int(y) - 1 + lo[1], int(x) - 1 + lo[2]


def tile_edges(n_voxels: int, spacing_mm: float, tile_size_mm: float) -> list[tuple[int, int]]:
    """Split ``n_voxels`` into the fewest equal tiles of at most ``tile_size_mm``: [(start, stop), ...]."""
    n_tiles = max(1, math.ceil(n_voxels * spacing_mm / tile_size_mm - 1e-9))
    cuts = [round(i * n_voxels / n_tiles) for i in range(n_tiles + 1)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _world(geometry: Geometry, index_zyx) -> tuple[float, float, float]:
    return tuple(float(v) for v in geometry.index_to_world(np.asarray(index_zyx, dtype=float)[::-1]))


def _world_bbox(geometry: Geometry, start_zyx, stop_zyx) -> tuple[tuple, tuple]:
    hi = [s - 1 for s in stop_zyx]
    corners = np.array(
        [[x, y, z] for z in (start_zyx[0], hi[0]) for y in (start_zyx[1], hi[1]) for x in (start_zyx[2], hi[2])],
        dtype=float,
    )
    w = geometry.index_to_world(corners)
    return tuple(w.min(axis=0)), tuple(w.max(axis=0))


def subsample_labelmap(labelmap: LabelMap, working_spacing_mm: float) -> LabelMap:
    """Keep every f-th voxel per axis, f = floor(working_spacing_mm / spacing) (>= 1).

    Seeding needs no more detail than the network's 1.5 mm grid; on a 0.7 mm CT this makes the
    distance transforms ~8x cheaper. World coordinates are unchanged (same origin and direction).
    """
    factors_xyz = [max(1, int(math.floor(working_spacing_mm / s + 1e-6))) for s in labelmap.geometry.spacing_xyz_mm]
    if factors_xyz == [1, 1, 1]:
        return labelmap
    fx, fy, fz = factors_xyz
    array = np.ascontiguousarray(labelmap.array[::fz, ::fy, ::fx])
    g = labelmap.geometry
    geometry = Geometry(
        shape_zyx=array.shape,
        spacing_xyz_mm=tuple(s * f for s, f in zip(g.spacing_xyz_mm, factors_xyz)),
        origin_xyz_mm=g.origin_xyz_mm,
        direction=g.direction,
    )
    return LabelMap(array=array, geometry=geometry, labels=labelmap.labels)


def select_structures(labelmap: LabelMap, settings: SeedSettings) -> tuple[list[tuple[int, str]], dict[str, str]]:
    """(label, name) pairs to seed, in label order, and {name: reason} for the others in the table.

    Names of ``settings.include`` that the label table lacks are not listed: this coarse map
    simply has no such class.
    """
    present = set(labelmap.present_labels())
    chosen: list[tuple[int, str]] = []
    skipped: dict[str, str] = {}
    include = None if settings.include is None else set(settings.include)
    exclude = set(settings.exclude)
    for label in sorted(labelmap.labels):
        name = labelmap.labels[label]
        if (include is not None and name not in include) or name in exclude:
            skipped[name] = "not refined: keeps its coarse mask (config structures.refine_include/refine_exclude)"
        elif label not in present:
            skipped[name] = "empty coarse mask"
        else:
            chosen.append((label, name))
    return chosen, skipped


#: default cap on prompt sets per seeded structure (a whole-body CT needs a few per structure; the
#: refine stage works at most ``refine.max_patches_per_structure`` = 32 patches per structure)
SETS_PER_STRUCTURE = 32


def prompt_set_cap(settings: SeedSettings, n_structures: int) -> int:
    """The hard cap on prompt sets for a case seeding ``n_structures`` structures."""
    if settings.max_prompt_sets is not None:
        return int(settings.max_prompt_sets)
    return SETS_PER_STRUCTURE * max(1, n_structures)


def _too_many_prompt_sets(cap: int, n_structures: int, g, name: str) -> InputDataError:
    return InputDataError(
        "too many prompt sets for one case",
        expected=f"at most {cap} prompt sets (seed.max_prompt_sets; default {SETS_PER_STRUCTURE} per seeded "
        f"structure, {n_structures} structures here)",
        found=f"more than {cap} by structure '{name}' (voxel spacing x,y,z "
        f"{', '.join(f'{v:g}' for v in g.spacing_xyz_mm)} mm: implausible spacing tiles structures without end)",
        fix="check the CT's voxel spacing (guards.spacing_mm in convert); raise seed.max_prompt_sets "
        "or seed.tile_size_mm only if the case is really this large",
    )


def seed_case(labelmap: LabelMap, settings: SeedSettings | None = None) -> CasePrompts:
    """Click prompts for every selected structure of ``labelmap`` (see the module docstring).

    Raises :class:`InputDataError` as soon as the case needs more than :func:`prompt_set_cap`
    prompt sets (a broken spacing would otherwise tile without end).
    """
    settings = settings or SeedSettings()
    ct_geometry = labelmap.geometry
    labelmap = subsample_labelmap(labelmap, settings.working_spacing_mm)
    g = labelmap.geometry
    spacing_zyx = tuple(reversed(g.spacing_xyz_mm))
    voxel_ml = g.voxel_volume_ml
    labels = labelmap.array
    chosen, skipped = select_structures(labelmap, settings)
    max_label = int(labels.max(initial=0))
    objects = ndimage.find_objects(labels, max_label=max_label) if max_label else []
    margin_vox = [int(math.ceil(settings.negative_margin_mm / s)) for s in spacing_zyx]
    cap = prompt_set_cap(settings, len(chosen))

    prompt_sets: list[PromptSet] = []
    infos: dict[str, StructureInfo] = {}
    for label, name in chosen:
        sl = objects[label - 1]
        offset = [s.start for s in sl]
        crop = labels[sl] == label
        comps, n = ndimage.label(crop, structure=_CONNECTIVITY)
        sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
        order = sorted(range(n), key=lambda i: (-int(sizes[i]), i))
        kept = [i for i in order if sizes[i] * voxel_ml >= settings.min_component_ml][: settings.max_components]
        if not kept:
            skipped[name] = (
                f"all {n} component(s) below seed.min_component_ml={settings.min_component_ml} ml "
                f"(largest {sizes.max() * voxel_ml:.3g} ml)"
            )
            continue
        comp_slices = ndimage.find_objects(comps)
        lo_all, hi_all = [], []
        n_sets_before = len(prompt_sets)
        for rank, ci in enumerate(kept):
            csl = comp_slices[ci]
            cmask = comps[csl] == ci + 1
            c0 = [offset[a] + csl[a].start for a in range(3)]
            lo, hi = _world_bbox(g, c0, [c0[a] + cmask.shape[a] for a in range(3)])
            lo_all.append(lo)
            hi_all.append(hi)
            edges = [tile_edges(cmask.shape[a], spacing_zyx[a], settings.tile_size_mm) for a in range(3)]
            single = all(len(e) == 1 for e in edges)
            tile_index = 0
            for ez in edges[0]:
                for ey in edges[1]:
                    for ex in edges[2]:
                        tsl = (slice(*ez), slice(*ey), slice(*ex))
                        sub = cmask[tsl]
                        count = int(sub.sum())
                        if count == 0 or (not single and count * voxel_ml < settings.tile_min_ml):
                            continue
                        t0 = [c0[a] + tsl[a].start for a in range(3)]
                        pz, py, px = interior_point(sub, spacing_zyx)
                        click_idx = (t0[0] + pz, t0[1] + py, t0[2] + px)
                        if single:
                            center_idx = [c0[a] + (cmask.shape[a] - 1) / 2 for a in range(3)]
                        else:
                            center_idx = [t0[a] + (sub.shape[a] - 1) / 2 for a in range(3)]
                        clicks = [Click(_world(g, click_idx), True, "interior" if single else "tile")]
                        clicks += _negatives(
                            labels, label, sub, t0, margin_vox, spacing_zyx, voxel_ml, g, labelmap.labels, settings
                        )
                        prompt_sets.append(
                            PromptSet(
                                structure=name,
                                component=rank,
                                tile=tile_index,
                                clicks=tuple(clicks),
                                center_xyz_mm=_world(g, center_idx),
                            )
                        )
                        tile_index += 1
                        if len(prompt_sets) > cap:
                            raise _too_many_prompt_sets(cap, len(chosen), g, name)
        lo = tuple(min(v[a] for v in lo_all) for a in range(3))
        hi = tuple(max(v[a] for v in hi_all) for a in range(3))
        infos[name] = StructureInfo(
            name=name,
            label=label,
            volume_ml=float(sizes.sum() * voxel_ml),
            n_components=len(kept),
            bbox_min_xyz_mm=lo,
            bbox_max_xyz_mm=hi,
        )
        log.debug("%s: %d component(s), %d prompt set(s)", name, len(kept), len(prompt_sets) - n_sets_before)
    return CasePrompts(
        ct_geometry=ct_geometry,
        prompt_sets=prompt_sets,
        structures=infos,
        skipped=skipped,
        settings={"seed": settings.to_dict()},
    )


def _negatives(labels, label, sub, t0, margin_vox, spacing_zyx, voxel_ml, g, table, settings) -> list[Click]:
    """Negative clicks at the interior points of other labels near the tile's part of the mask."""
    if settings.max_negatives <= 0:
        return []
    nz = np.nonzero(sub.any(axis=(1, 2)))[0], np.nonzero(sub.any(axis=(0, 2)))[0], np.nonzero(sub.any(axis=(0, 1)))[0]
    start = [max(0, t0[a] + int(nz[a][0]) - margin_vox[a]) for a in range(3)]
    stop = [min(labels.shape[a], t0[a] + int(nz[a][-1]) + 1 + margin_vox[a]) for a in range(3)]
    region = labels[tuple(slice(a, b) for a, b in zip(start, stop))]
    counts = np.bincount(region.ravel())
    cands = [
        (int(c), m) for m, c in enumerate(counts) if m not in (0, label) and c * voxel_ml >= settings.min_negative_ml
    ]
    cands.sort(key=lambda t: (-t[0], t[1]))
    out = []
    for _, m in cands[: settings.max_negatives]:
        pz, py, px = interior_point(region == m, spacing_zyx)
        idx = (start[0] + pz, start[1] + py, start[2] + px)
        out.append(Click(_world(g, idx), False, f"neighbour:{table.get(m, f'label_{m}')}"))
    return out
