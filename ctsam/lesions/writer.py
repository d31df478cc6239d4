"""Writing a case's lesions: ``LESIONS.nii.gz`` (+ ``.tsv`` label table) and the ``LESIONS.json`` sidecar.

The lesion map holds each lesion's id as voxel value (uint8, or uint16 above 255) and a label table
``{id: lesion_<id>}``. The sidecar (format ``ctsam.lesions/1``) lists per lesion: the click, its
label and model, voxel count, volume (ml), RECIST long/short axes, longest 3-D diameter, centroid,
mean/max probability inside the lesion, whether it reaches the patch border (too large for one
patch), the structure containing most of it (with ``--labels``), and notes. It holds no input paths
and no timings, so identical inputs give identical bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ctsam.io.atomic import atomic_write_json
from ctsam.lesions.engine import LesionResult
from ctsam.lesions.measures import (
    centroid_world_mm,
    containing_structure,
    longest_diameter_mm,
    recist_diameters,
)
from ctsam.volume import Geometry, LabelMap

FORMAT = "ctsam.lesions/1"


def lesion_name(lesion_id: int) -> str:
    """Label-table name of a lesion (also its 'structure' in QC and radiomics tables)."""
    return f"lesion_{lesion_id}"


def sidecar_json_path(lesions_path: str | os.PathLike[str]) -> Path:
    """``lesions.nii.gz`` -> ``lesions.json``."""
    p = Path(lesions_path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_suffix(".json")


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(float(v), nd)


def lesion_records(result: LesionResult, geometry: Geometry, *, labels: LabelMap | None = None) -> list[dict[str, Any]]:
    """One record per lesion (in lesion-id order), measured on the resolved lesion map."""
    records = []
    for pred in sorted(result.predictions, key=lambda p: p.click.lesion_id):
        lid = pred.click.lesion_id
        sl = pred.slices()
        final = result.array[sl] == lid
        n = int(final.sum())
        recist = recist_diameters(final, geometry, pred.start_zyx)
        probs = pred.probability[final]
        idx_zyx = geometry.world_to_index(np.asarray(pred.click.world_xyz_mm))[::-1]
        rec: dict[str, Any] = {
            "lesion_id": lid,
            "name": lesion_name(lid),
            "label": pred.click.label,
            "model": pred.model_key or "default",
            "click": {
                "source": pred.click.source,
                "world_lps_mm": [_r(v) for v in pred.click.world_xyz_mm],
                "index_zyx": [_r(v, 2) for v in idx_zyx],
                "inside_lesion": bool(
                    pred.click_in_mask
                    and n
                    and final[tuple(np.floor(idx_zyx + 0.5).astype(int) - np.asarray(pred.start_zyx))]
                ),
            },
            "voxel_count": n,
            "volume_ml": _r(n * geometry.voxel_volume_ml, 4),
            "recist_long_axis_mm": _r(recist.long_axis_mm, 2),
            "recist_short_axis_mm": _r(recist.short_axis_mm, 2),
            "recist_slice": {"axis": recist.axial_axis, "index": recist.slice_index},
            "longest_diameter_3d_mm": _r(longest_diameter_mm(final, geometry, pred.start_zyx), 2),
            "centroid_lps_mm": (
                None if (c := centroid_world_mm(final, geometry, pred.start_zyx)) is None else [_r(v) for v in c]
            ),
            "mean_probability": _r(float(probs.mean()) if n else None, 4),
            "max_probability": _r(float(probs.max()) if n else None, 4),
            "touches_patch_border": bool(pred.touches_patch_border),
            "voxels_lost_to_overlap": int(result.lost_voxels.get(lid, 0)),
        }
        if labels is not None:
            name, fraction = containing_structure(final, labels.array[sl], labels.labels)
            rec["containing_structure"] = name
            rec["containing_fraction"] = _r(fraction, 4)
        notes = list(pred.notes)
        if rec["voxels_lost_to_overlap"]:
            notes.append(
                f"{rec['voxels_lost_to_overlap']} voxel(s) went to an overlapping lesion with a higher probability"
            )
        rec["notes"] = notes
        records.append(rec)
    return records


def model_record(model) -> dict[str, Any]:
    """What identifies a model in the sidecar (no file path)."""
    spec = model.input_spec
    return {
        "family": model.family,
        "variant": model.variant,
        "preset": spec.preset,
        "sha256": model.sha256,
        "patch_size_zyx": list(spec.patch_size_zyx),
        "spacing_zyx_mm": list(spec.spacing_zyx_mm),
        "hu_window": None if spec.hu_window is None else list(spec.hu_window),
        "zscore_mean_std": None if spec.zscore_mean_std is None else list(spec.zscore_mean_std),
    }


def write_lesions(
    path: str | os.PathLike[str],
    result: LesionResult,
    geometry: Geometry,
    *,
    case: str | None,
    models: dict[str, Any],
    settings,
    labels: LabelMap | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the lesion map (+ label table) and its JSON sidecar atomically; return the sidecar."""
    from ctsam import __version__
    from ctsam.io.image import write_labelmap

    names = {p.click.lesion_id: lesion_name(p.click.lesion_id) for p in result.predictions}
    records = lesion_records(result, geometry, labels=labels)
    sidecar: dict[str, Any] = {
        "format": FORMAT,
        "case": case,
        "ctsam": __version__,
        "ct_geometry": geometry.to_dict(),
        "settings": {
            "threshold": settings.threshold,
            "keep": settings.keep,
            "pad_hu": settings.pad_hu,
            "snap_mm": settings.snap_mm,
        },
        "models": {key or "default": model_record(m) for key, m in sorted(models.items())},
        "n_lesions": len(records),
        "n_touching_patch_border": sum(r["touches_patch_border"] for r in records),
        "lesions": records,
        **(extra or {}),
    }
    write_labelmap(path, LabelMap(array=result.array, geometry=geometry, labels=names))
    atomic_write_json(sidecar_json_path(path), sidecar)
    return sidecar


def read_lesions_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar beside a lesion map (``lesions.json``), or None when there is none."""
    import json

    side = sidecar_json_path(path)
    if not side.is_file():
        return None
    data = json.loads(side.read_text(encoding="utf-8"))
    return data if data.get("format") == FORMAT else None
