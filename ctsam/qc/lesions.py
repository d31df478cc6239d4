"""QC rows for lesions (``ctsam qc --lesions``): one record per lesion of a ``ctsam lesions`` map.

Each record: id, name, voxels, volume (ml), HU statistics, centroid, RECIST and 3-D diameters and
probabilities from the lesion sidecar, the final-label structure containing most of it, and flags:

* ``lesion_empty`` (error): the click produced no lesion voxels;
* ``lesion_patch_border`` (warning): the lesion reaches the border of the model's patch, so it is
  probably larger than one patch and cut off;
* ``lesion_low_confidence`` (warning): mean probability inside the lesion below ``qc.min_mean_probability``;
* ``lesion_click_outside`` (warning): the click is not inside the lesion it produced;
* ``lesion_outside_structures`` (info): no labelled structure contains any of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctsam.volume import CTVolume, LabelMap

SEVERITY = {
    "lesion_empty": "error",
    "lesion_patch_border": "warning",
    "lesion_low_confidence": "warning",
    "lesion_click_outside": "warning",
    "lesion_outside_structures": "info",
}


def _flag(name: str, message: str) -> dict:
    return {"flag": name, "severity": SEVERITY[name], "message": message, "value": None, "threshold": None}


def _centroid_mm(mask: np.ndarray, lesions: LabelMap, start_zyx) -> list[float]:
    mean_zyx = np.argwhere(mask).mean(axis=0) + np.asarray(start_zyx, dtype=float)
    return [round(float(v), 3) for v in lesions.geometry.index_to_world(mean_zyx[::-1])]


def _containing(mask: np.ndarray, labels_crop: np.ndarray, names: dict[int, str]) -> tuple[str | None, float]:
    """The final-label structure holding most of the lesion (lower label on ties) and its share."""
    counts = np.bincount(labels_crop[mask].astype(np.int64))
    counts[0] = 0
    if counts.sum() == 0:
        return None, 0.0
    best = int(np.argmax(counts))
    return names.get(best, f"label_{best}"), float(counts[best]) / int(mask.sum())


def lesion_qc(
    ct: CTVolume, lesions: LabelMap, final: LabelMap | None, sidecar: dict | None, config: dict
) -> dict[str, Any]:
    """``{"lesions": [records], "summary": {...}}`` for a lesion map (and its sidecar, when present)."""
    from scipy import ndimage

    from_sidecar = {int(r["lesion_id"]): r for r in (sidecar or {}).get("lesions", [])}
    ids = sorted(set(lesions.present_labels()) | set(from_sidecar) | set(lesions.labels))
    boxes = ndimage.find_objects(lesions.array.astype(np.int64, copy=False)) if lesions.array.any() else []
    voxel_ml = lesions.geometry.voxel_volume_ml
    min_prob = float(config.get("min_mean_probability", 0.6))
    records = []
    for lid in ids:
        box = boxes[lid - 1] if 0 < lid <= len(boxes) else None
        side = from_sidecar.get(lid, {})
        rec: dict[str, Any] = {
            "lesion_id": lid,
            "name": lesions.labels.get(lid, side.get("name", f"lesion_{lid}")),
            "label": side.get("label"),
        }
        flags = []
        if box is None:
            rec.update(voxels=0, volume_ml=0.0, hu=None, centroid_lps_mm=None, containing_structure=None)
            flags.append(_flag("lesion_empty", "no voxel of this lesion in the lesion map"))
        else:
            mask = lesions.array[box] == lid
            hu = ct.array[box][mask].astype(np.float64)
            start = tuple(s.start for s in box)
            rec.update(
                voxels=int(mask.sum()),
                volume_ml=round(float(mask.sum()) * voxel_ml, 4),
                hu={
                    "mean": round(float(hu.mean()), 2),
                    "sd": round(float(hu.std()), 2),
                    "p05": round(float(np.percentile(hu, 5)), 2),
                    "p50": round(float(np.percentile(hu, 50)), 2),
                    "p95": round(float(np.percentile(hu, 95)), 2),
                },
                centroid_lps_mm=_centroid_mm(mask, lesions, start),
            )
            name = None
            if final is not None:
                name, fraction = _containing(mask, final.array[box], final.labels)
                rec["containing_structure"] = name
                rec["containing_fraction"] = round(fraction, 4)
                if name is None:
                    flags.append(_flag("lesion_outside_structures", "no labelled structure holds any of this lesion"))
        for key in (
            "recist_long_axis_mm",
            "recist_short_axis_mm",
            "longest_diameter_3d_mm",
            "mean_probability",
            "max_probability",
            "touches_patch_border",
        ):
            rec[key] = side.get(key)
        if side.get("touches_patch_border"):
            flags.append(
                _flag(
                    "lesion_patch_border",
                    "the lesion reaches the border of the model's patch: probably larger than one patch and cut off",
                )
            )
        mp = side.get("mean_probability")
        if mp is not None and mp < min_prob:
            flags.append(
                _flag("lesion_low_confidence", f"mean probability {mp:.3f} < {min_prob}")
                | {"value": mp, "threshold": min_prob}
            )
        if side and rec["voxels"] and not (side.get("click") or {}).get("inside_lesion", True):
            flags.append(_flag("lesion_click_outside", "the click is not inside the lesion it produced"))
        rec["flags"] = flags
        records.append(rec)
    counts: dict[str, int] = {}
    for r in records:
        for f in r["flags"]:
            counts[f["flag"]] = counts.get(f["flag"], 0) + 1
    return {
        "lesions": records,
        "summary": {
            "n_lesions": len(records),
            "n_flags": sum(counts.values()),
            "flag_counts": dict(sorted(counts.items())),
            "volume_ml": round(sum(r["volume_ml"] for r in records), 4),
        },
    }
