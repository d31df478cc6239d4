"""Per-case QC: measurements, coarse-vs-final agreement and flags for every structure.

Structures are matched by name: a coarse class counts as the reference of the final structure
``name_map(coarse_name)`` (several coarse classes mapping onto one structure are merged). Each
structure is processed inside the joint bounding box of its final and coarse masks plus one voxel
(``scipy.ndimage.find_objects`` once per label map), so the cost grows with the structures' sizes,
not with the number of structures times the volume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from ctsam.masks import DEFINITIONS, box_union, compare_masks, padded_crop
from ctsam.qc import flags as qcflags
from ctsam.qc.case_flags import case_level_flags
from ctsam.qc.measures import COMPONENT_CONNECTIVITY, border_contact, centroid_world_lps, component_stats, hu_stats
from ctsam.refine.refined_file import RefinedCase
from ctsam.volume import CTVolume, LabelMap, check_same_space

log = logging.getLogger(__name__)

QC_FORMAT_VERSION = 1
_MARGIN = 1


def compute_case_qc(
    ct: CTVolume,
    final: LabelMap,
    coarse: LabelMap | None,
    config: dict,
    *,
    refined: RefinedCase | None = None,
    name_map: Callable[[str], str | None] | None = None,
    fusion_sources: dict[str, dict] | None = None,
    case: str | None = None,
) -> dict:
    """QC document of one case (JSON-able).

    Args:
        ct: the CT (HU), (z, y, x).
        final: the fused label map on the CT grid.
        coarse: the coarse label map on the same grid, or None (agreement metrics are skipped).
        config: the ``qc`` config section.
        refined: refined probabilities, for model confidence; names are mapped with ``name_map``.
        name_map: coarse/refined structure name -> final structure name (None = no counterpart);
            default: identity.
        fusion_sources: ``{final name: {"source": ..., "reason": ...}}`` from the fusion sidecar.
    """
    from scipy import ndimage

    t0 = time.perf_counter()
    name_map = name_map or (lambda n: n)
    geometry = final.geometry
    check_same_space(ct.geometry, geometry, name_a="CT", name_b="final label map", case=case)
    if coarse is not None:
        check_same_space(ct.geometry, coarse.geometry, name_a="CT", name_b="coarse label map", case=case)
    if refined is not None:
        check_same_space(ct.geometry, refined.geometry, name_a="CT", name_b="refined result", case=case)
    spacing_zyx = tuple(reversed(geometry.spacing_xyz_mm))
    voxel_ml = geometry.voxel_volume_ml
    shape = geometry.shape_zyx

    final_boxes = ndimage.find_objects(final.array)
    final_idx: dict[str, int] = {}
    for i, box in enumerate(final_boxes, start=1):
        if box is not None:
            final_idx[final.labels.get(i, f"label_{i}")] = i
    ref_members: dict[str, list[int]] = {}
    coarse_boxes: list = []
    unmatched_coarse: list[str] = []
    if coarse is not None:
        coarse_boxes = ndimage.find_objects(coarse.array)
        for i, box in enumerate(coarse_boxes, start=1):
            if box is None:
                continue
            src = coarse.labels.get(i, f"label_{i}")
            name = name_map(src)
            if name is None:
                unmatched_coarse.append(src)
                continue
            ref_members.setdefault(name, []).append(i)
    refined_by_name = {}
    if refined is not None:
        for s in refined.structures:
            name = name_map(s.name)
            if name is not None:
                refined_by_name[name] = s

    name_to_index = {n: i for i, n in final.labels.items()}
    names = sorted(set(final_idx) | set(ref_members), key=lambda n: (name_to_index.get(n, 10**6), n))
    records: list[dict] = []
    for name in names:
        fi = final_idx.get(name)
        fbox = final_boxes[fi - 1] if fi is not None else None
        members = ref_members.get(name, [])
        rbox = None
        for i in members:
            rbox = box_union(rbox, coarse_boxes[i - 1])
        rec: dict = {
            "name": name,
            "index": name_to_index.get(name),
            "voxels": 0,
            "volume_ml": 0.0,
            "flags": [],
        }
        if fusion_sources and name in fusion_sources:
            rec["fusion"] = fusion_sources[name]
        if fbox is not None:
            fmask = final.array[fbox] == fi
            offset = tuple(s.start for s in fbox)
            n = int(np.count_nonzero(fmask))
            rec["voxels"] = n
            rec["volume_ml"] = n * voxel_ml
            rec["components"], rec["largest_component_fraction"] = component_stats(fmask)
            rec["hu"] = hu_stats(ct.array[fbox][fmask], list(config["hu_percentiles"]))
            rec["border_voxels"] = border_contact(fmask, offset, shape)
            rec["centroid_lps_mm"] = centroid_world_lps(fmask, offset, geometry)
            s = refined_by_name.get(name)
            if s is not None:
                rec["confidence"] = _confidence(fmask, fbox, s)
            del fmask
        if coarse is not None:
            box = box_union(fbox, rbox)
            fcrop = padded_crop(final.array, box, _MARGIN) == fi if fi is not None else None
            ccrop = padded_crop(coarse.array, box, _MARGIN)
            rmask = np.isin(ccrop, members) if len(members) != 1 else ccrop == members[0]
            if fcrop is None:
                fcrop = np.zeros_like(rmask)
            tol = qcflags.nsd_tolerance_for(name, config)
            ag = compare_masks(fcrop, rmask, spacing_zyx, nsd_tolerance_mm=tol, cropped=True)
            rec["agreement"] = ag.to_dict()
            rec["coarse_voxels"] = ag.voxels_reference
            rec["coarse_volume_ml"] = ag.voxels_reference * voxel_ml
        qcflags.structure_flags(rec, config)
        records.append(rec)
    records += qcflags.missing_partner_records(records, config, name_to_index)
    records.sort(key=lambda r: (r["index"] if r.get("index") is not None else 10**6, r["name"]))
    qcflags.laterality_flags(records, config)
    for rec in records:
        rec["severity"] = qcflags.worst_severity(rec["flags"])
        rec["severity_score"] = qcflags.severity_score(rec["flags"])

    case_flags = case_level_flags(final, config)
    all_flags = case_flags + [f | {"structure": r["name"]} for r in records for f in r["flags"]]
    counts: dict[str, int] = {}
    for f in all_flags:
        counts[f["flag"]] = counts.get(f["flag"], 0) + 1
    elapsed = time.perf_counter() - t0
    log.info("QC of %d structures: %d flags in %.2f s", len(records), len(all_flags), elapsed)
    return {
        "format_version": QC_FORMAT_VERSION,
        "case": case,
        "geometry": geometry.to_dict(),
        "definitions": {
            **DEFINITIONS,
            "components": f"{COMPONENT_CONNECTIVITY}-connected components of the final mask",
            "border_voxels": "final-mask voxels on each outer face of the image grid",
            "centroid_lps_mm": "mean voxel position in LPS world mm (+x patient left, +y posterior, +z superior)",
            "reference": "agreement compares the final mask (P) with the coarse mask (R) of the same structure",
        },
        "config": config,
        "n_structures": len(records),
        "unmatched_coarse_classes": unmatched_coarse,
        "case_flags": case_flags,
        "summary": {
            "n_flags": len(all_flags),
            "flag_counts": dict(sorted(counts.items())),
            "severity": qcflags.worst_severity(all_flags),
            "severity_score": qcflags.severity_score(all_flags),
        },
        "structures": records,
    }


def _confidence(fmask: np.ndarray, fbox: tuple[slice, ...], s) -> dict:
    """Mean refined probability over the final-mask voxels inside the refined crop, plus quality."""
    inter = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(fbox, s.slices))
    total = int(np.count_nonzero(fmask))
    out: dict = {"quality": None if s.quality != s.quality else float(s.quality), "n_decodes": s.n_decodes}
    if any(x.stop <= x.start for x in inter) or total == 0:
        out.update(mean_probability=None, covered_fraction=0.0)
        return out
    m = fmask[tuple(slice(i.start - f.start, i.stop - f.start) for i, f in zip(inter, fbox))]
    p = s.probs_u8[tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(inter, s.slices))][m]
    out.update(
        mean_probability=float(p.mean() / 255.0) if p.size else None,
        covered_fraction=float(p.size / total),
    )
    return out
