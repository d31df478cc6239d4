"""Fusion: coarse TotalSegmentator labels + refined probabilities -> one label map per case.

The output vocabulary is the 107 CT-SAM3D / TotalSeg++ structures (ids 1..107, see
:mod:`ctsam.labels`), optionally followed by the TotalSegmentator ``total`` classes that have no
1:1 counterpart (ids 108.., in TotalSegmentator id order, the same for every case).

Rules (all voxel indices on the CT grid, arrays (z, y, x)):

1. **Source per structure.** A refined structure is *accepted* unless: the refine stage skipped it;
   its quality-head score is below ``fuse.min_quality`` (unknown scores pass); its refined volume
   (voxels with p >= ``fuse.threshold``) is empty or its ratio to the coarse volume is outside
   [``min_volume_ratio``, ``max_volume_ratio``]; or it has no coarse mask and
   ``accept_without_coarse`` is false. Otherwise the structure's coarse mask is used and the reason
   is recorded (``no_refined_file``, ``not_refined``, ``refine_skipped: ...``, ``low_quality``,
   ``refined_empty``, ``volume_ratio``, ``no_coarse_mask``).
2. **Coarse structures** are painted first, from the coarse label map (coarse masks never overlap).
3. **Refined structures** are then painted in ascending output index. A voxel goes to refined
   structure s when ``p_s >= threshold``, the voxel lies within ``dilation_margin_mm`` of s's coarse
   mask (refined beats coarse only inside this margin; no constraint when s has no coarse mask
   and was accepted anyway), ``p_s`` is strictly greater than the best refined probability painted
   there so far, and -- with ``protect_coarse`` (default) -- the voxel does not belong to a structure
   that keeps its coarse mask. So the most probable refined structure wins, a structure that was not
   refined (skipped, rejected or excluded) keeps all its coarse voxels (with ``protect_coarse: false``
   a refined structure beats any coarse label inside its margin), and **ties keep the lower output
   index**. Probabilities are compared as stored (uint8, ``round(p * 255)``).
4. **Holes.** Voxels that were in s's coarse mask, that s did not claim and nobody else claimed either
   are filled with s: all of them (``fill_holes: all``), only those enclosed by s's final mask
   (``enclosed``, 3-D ``binary_fill_holes``), or none (``none``).

Memory: one output label volume plus one uint8 "best probability" volume (only when a refined file
is given); every structure is processed inside its bounding box (``scipy.ndimage.find_objects``
once on the coarse map).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ctsam.errors import InputDataError
from ctsam.labels import OutputVocabulary, build_vocabulary, default_vocabulary  # noqa: F401 - re-exported
from ctsam.masks import box_intersection, box_union, edge_voxels, grow_box
from ctsam.refine.refined_file import RefinedCase, StructureProbability
from ctsam.volume import LabelMap, check_same_space, smallest_label_dtype, z_slabs

log = logging.getLogger(__name__)

SOURCE_REFINED = "refined"
SOURCE_COARSE = "coarse"


# ---------------------------------------------------------------------------------------- report
@dataclass
class StructureFusion:
    """How one output structure was made.

    Attributes:
        name, index: output structure.
        source: ``refined`` or ``coarse``.
        reason: why the coarse mask was used (None for refined).
        coarse_voxels: voxels in the structure's coarse mask.
        refined_voxels: refined voxels with p >= threshold (None when not refined).
        volume_ratio: refined_voxels / coarse_voxels (None when undefined).
        quality: quality-head score when refined.
        final_voxels: voxels in the fused map.
        filled_from_coarse_voxels: hole voxels filled from the coarse mask.
        coarse_sources: source class names merged into this structure.
    """

    name: str
    index: int
    source: str
    reason: str | None = None
    coarse_voxels: int = 0
    refined_voxels: int | None = None
    volume_ratio: float | None = None
    quality: float | None = None
    final_voxels: int = 0
    filled_from_coarse_voxels: int = 0
    coarse_sources: list[str] = field(default_factory=list)


@dataclass
class FusionResult:
    labelmap: LabelMap
    structures: list[StructureFusion]
    dropped_coarse: list[str]
    dropped_refined: list[str]
    vocabulary: OutputVocabulary
    timing_s: dict[str, float]

    def sidecar(self, *, config: dict, case: str | None = None, inputs: dict | None = None) -> dict:
        """JSON-able record of the fusion (no PHI: names of structures and files only).

        Deterministic: the same inputs give the same document (timings are logged, not stored).
        """
        counts = {SOURCE_REFINED: 0, SOURCE_COARSE: 0}
        for s in self.structures:
            counts[s.source] += 1
        return {
            "case": case,
            "inputs": inputs or {},
            "config": config,
            "geometry": self.labelmap.geometry.to_dict(),
            "n_structures": len(self.structures),
            "n_by_source": counts,
            "structures": [_clean(asdict(s)) for s in self.structures],
            "dropped_coarse_classes": self.dropped_coarse,
            "dropped_refined_structures": self.dropped_refined,
            "label_table": {str(k): v for k, v in sorted(self.labelmap.labels.items())},
        }


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


# ---------------------------------------------------------------------------------------- helpers
def _sub(box: tuple[slice, ...], within: tuple[slice, ...]) -> tuple[slice, ...]:
    """``box`` expressed relative to the origin of ``within``."""
    return tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(box, within))


def _member_mask(coarse: np.ndarray, box: tuple[slice, ...], members: list[int]) -> np.ndarray:
    crop = coarse[box]
    if len(members) == 1:
        return crop == members[0]
    return np.isin(crop, members)


def _restrict_to_margin(
    cand: np.ndarray,
    region: tuple[slice, ...],
    coarse: np.ndarray,
    box: tuple[slice, ...],
    members: list[int],
    spacing_zyx: np.ndarray,
    margin_mm: float,
) -> None:
    """Clear candidates (in place) farther than ``margin_mm`` from the structure's coarse mask.

    Distances are Euclidean in mm between voxel centres (as ``distance_transform_edt`` with the
    spacing), but only the candidates outside the coarse mask -- a thin shell -- are measured, by a
    KD-tree over the coarse mask's edge voxels (the nearest mask voxel of an outside point is always
    an edge voxel).
    """
    from scipy.spatial import cKDTree

    inside = _member_mask(coarse, region, members)
    outside = cand & ~inside
    if not outside.any():
        return
    edges = np.argwhere(edge_voxels(_member_mask(coarse, box, members)))
    origin_edge = np.array([b.start for b in box], dtype=float)
    origin_reg = np.array([r.start for r in region], dtype=float)
    pts = np.argwhere(outside)
    d = cKDTree((edges + origin_edge) * spacing_zyx).query(
        (pts + origin_reg) * spacing_zyx, k=1, distance_upper_bound=margin_mm * (1 + 1e-9) + 1e-9
    )[0]
    far = pts[~(d <= margin_mm + 1e-9)]
    cand[tuple(far.T)] = False


def threshold_u8(threshold: float) -> int:
    """uint8 probability threshold equivalent to ``p >= threshold`` for p = u8 / 255."""
    return int(min(255, max(1, math.ceil(threshold * 255.0 - 1e-9))))


# ---------------------------------------------------------------------------------------- fusion
def fuse(
    coarse: LabelMap,
    refined: RefinedCase | None,
    vocabulary: OutputVocabulary,
    config: dict,
    *,
    case: str | None = None,
) -> FusionResult:
    """Fuse a coarse label map and (optionally) refined probabilities; see the module docstring.

    Args:
        coarse: coarse label map (any source vocabulary that ``vocabulary`` maps), (z, y, x).
        refined: refined probabilities on the same grid, or None when the model was not used.
        vocabulary: output vocabulary.
        config: the ``fuse`` config section.
    """
    from scipy import ndimage

    t0 = time.perf_counter()
    geometry = coarse.geometry
    shape = geometry.shape_zyx
    if refined is not None:
        check_same_space(geometry, refined.geometry, name_a="coarse label map", name_b="refined result", case=case)
    spacing_zyx = np.asarray(geometry.spacing_xyz_mm[::-1], dtype=float)
    t_u8 = threshold_u8(float(config["threshold"]))
    margin_mm = float(config["dilation_margin_mm"])
    margin_vox = [int(math.ceil(margin_mm / s)) for s in spacing_zyx]

    # --- coarse structures: one find_objects pass
    boxes = ndimage.find_objects(coarse.array)
    members: dict[str, list[int]] = {}
    member_box: dict[str, tuple[slice, ...]] = {}
    coarse_count: dict[str, int] = {}
    dropped_coarse: list[str] = []
    for i, box in enumerate(boxes, start=1):
        if box is None:
            continue
        src = coarse.labels.get(i, f"label_{i}")
        out = vocabulary.output_name(src)
        if out is None:
            dropped_coarse.append(src)
            continue
        members.setdefault(out, []).append(i)
        member_box[out] = box_union(member_box.get(out), box)  # type: ignore[assignment]
        coarse_count[out] = coarse_count.get(out, 0) + int(np.count_nonzero(coarse.array[box] == i))
    if dropped_coarse:
        log.info("coarse classes without an output structure (dropped): %s", ", ".join(dropped_coarse))

    # --- refined structures and their acceptance
    refined_by_out: dict[str, StructureProbability] = {}
    dropped_refined: list[str] = []
    skipped: dict[str, str] = {}
    if refined is not None:
        for s in refined.structures:
            out = vocabulary.output_name(s.name)
            if out is None:
                dropped_refined.append(s.name)
                continue
            if out in refined_by_out:
                raise InputDataError(
                    "two refined structures map onto the same output structure",
                    case=case,
                    expected="at most one refined structure per output structure",
                    found=f"{refined_by_out[out].name!r} and {s.name!r} -> {out!r}",
                    fix="refine each structure once",
                )
            refined_by_out[out] = s
        for name, reason in refined.skipped.items():
            out = vocabulary.output_name(name)
            if out is not None:
                skipped[out] = reason

    report: dict[str, StructureFusion] = {}
    accepted: list[str] = []
    for out in sorted(set(members) | set(refined_by_out), key=lambda n: vocabulary.output_index(n)):  # type: ignore[arg-type, return-value]
        idx = vocabulary.output_index(out)
        assert idx is not None
        rec = StructureFusion(
            name=out,
            index=idx,
            source=SOURCE_COARSE,
            coarse_voxels=coarse_count.get(out, 0),
            coarse_sources=[coarse.labels.get(i, f"label_{i}") for i in members.get(out, [])],
        )
        report[out] = rec
        s = refined_by_out.get(out)
        if s is None:
            rec.reason = (
                "no_refined_file"
                if refined is None
                else (f"refine_skipped: {skipped[out]}" if out in skipped else "not_refined")
            )
            continue
        rec.quality = None if s.quality != s.quality else float(s.quality)
        rec.refined_voxels = int(np.count_nonzero(s.probs_u8 >= t_u8))
        if rec.coarse_voxels:
            rec.volume_ratio = rec.refined_voxels / rec.coarse_voxels
        if rec.quality is not None and rec.quality < float(config["min_quality"]):
            rec.reason = f"low_quality: {rec.quality:.3f} < {config['min_quality']}"
        elif rec.refined_voxels == 0:
            rec.reason = "refined_empty"
        elif rec.coarse_voxels == 0 and not config["accept_without_coarse"]:
            rec.reason = "no_coarse_mask"
        elif rec.volume_ratio is not None and not (
            float(config["min_volume_ratio"]) <= rec.volume_ratio <= float(config["max_volume_ratio"])
        ):
            rec.reason = (
                f"volume_ratio: {rec.volume_ratio:.3f} outside "
                f"[{config['min_volume_ratio']}, {config['max_volume_ratio']}]"
            )
        else:
            rec.source = SOURCE_REFINED
            accepted.append(out)

    # --- paint
    max_index = max(vocabulary.labels) if vocabulary.labels else 0
    out_arr = np.zeros(shape, dtype=smallest_label_dtype(max_index))
    for out, rec in report.items():
        if rec.source != SOURCE_COARSE or out not in members:
            continue
        for i in members[out]:
            box = boxes[i - 1]
            view = out_arr[box]
            view[coarse.array[box] == i] = rec.index
    t_coarse = time.perf_counter()

    best = np.zeros(shape, dtype=np.uint8) if accepted else None
    keeps_coarse = np.zeros(max_index + 1, dtype=bool)  # output index -> painted from its coarse mask
    if config.get("protect_coarse", True):
        for rec in report.values():
            keeps_coarse[rec.index] = rec.source == SOURCE_COARSE
    claim_box: dict[str, tuple[slice, ...]] = {}
    for out in sorted(accepted, key=lambda n: report[n].index):
        rec, s = report[out], refined_by_out[out]
        region = s.slices
        if out in members:
            region = box_intersection(region, grow_box(member_box[out], margin_vox, shape))
            if region is None:
                continue
        p = s.probs_u8[_sub(region, s.slices)]
        best_view = best[region]  # type: ignore[index]
        cand = (p >= t_u8) & (p > best_view) & ~keeps_coarse[out_arr[region]]
        if out in members:
            _restrict_to_margin(cand, region, coarse.array, member_box[out], members[out], spacing_zyx, margin_mm)
        out_arr[region][cand] = rec.index
        best_view[cand] = p[cand]
        claim_box[out] = region
    del best
    t_refined = time.perf_counter()

    # --- holes left by refinement inside the coarse mask
    mode = config["fill_holes"]
    if mode != "none":
        for out in accepted:
            if out not in members:
                continue
            rec = report[out]
            box = box_union(member_box[out], claim_box.get(out))
            view = out_arr[box]
            unl = (view == 0) & _member_mask(coarse.array, box, members[out])  # type: ignore[arg-type]
            if mode == "enclosed" and unl.any():
                unl &= ndimage.binary_fill_holes(view == rec.index)
            n = int(np.count_nonzero(unl))
            if n:
                view[unl] = rec.index
                rec.filled_from_coarse_voxels = n

    counts = np.zeros(max_index + 1, dtype=np.int64)
    for zs in z_slabs(shape):  # bincount widens to int64: slabs keep that temporary small
        counts += np.bincount(out_arr[zs].ravel(), minlength=max_index + 1)
    for rec in report.values():
        rec.final_voxels = int(counts[rec.index])
    t_end = time.perf_counter()
    labelmap = LabelMap(array=out_arr, geometry=geometry, labels=dict(vocabulary.labels))
    log.info(
        "fused %d structures (%d refined, %d coarse) in %.2f s",
        len(report),
        len(accepted),
        len(report) - len(accepted),
        t_end - t0,
    )
    return FusionResult(
        labelmap=labelmap,
        structures=sorted(report.values(), key=lambda r: r.index),
        dropped_coarse=dropped_coarse,
        dropped_refined=dropped_refined,
        vocabulary=vocabulary,
        timing_s={
            "coarse_paint": round(t_coarse - t0, 4),
            "refined_paint": round(t_refined - t_coarse, 4),
            "holes_and_counts": round(t_end - t_refined, 4),
            "total": round(t_end - t0, 4),
        },
    )
