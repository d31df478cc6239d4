"""The coarse stage: one CT in, one coarse label map (coarse id space) plus a JSON sidecar out.

Backends:

* ``totalsegmentator``: weights preflight, then the TotalSegmentator CLI in a job sandbox
  (:mod:`ctsam.coarse.totalseg`);
* ``labels``: a user label map or mask folder (:mod:`ctsam.coarse.userlabels`).

Either way the names are mapped onto ctsam's catalogue (:mod:`ctsam.coarse.mapping`), the result
is written on the CT's exact grid with :func:`ctsam.io.image.write_labelmap` (label table = the
classes present), and the sidecar ``<out stem>.json`` records the backend, classes found and
absent, unknown names and provenance. Sidecar and label map are deterministic (no timings, no
temporary paths) and hold no PHI (file names only, no header fields).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctsam import __version__
from ctsam.errors import ConfigError
from ctsam.io.atomic import atomic_write_json
from ctsam.io.labeltable import sidecar_tsv_path

if TYPE_CHECKING:
    from ctsam.volume import Geometry

# numpy, nibabel and the modules using them are imported inside the functions: the
# TotalSegmentator backend starts its subprocess first and imports them while it runs.

log = logging.getLogger(__name__)

BACKENDS = ("totalsegmentator", "labels")
LABEL_SPACE = "TotalSegmentator v2 'total' ids 1-117 + ctsam extension ids 118-127 (ctsam.labels.coarse_catalogue)"


def sidecar_path_for(out_path: str | os.PathLike[str]) -> Path:
    """``coarse.nii.gz`` -> ``coarse.json``."""
    return sidecar_tsv_path(out_path).with_suffix(".json")


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def ct_geometry(path: str | os.PathLike[str], *, case: str | None = None) -> Geometry:
    """The CT's grid; NIfTI is read header-only."""
    from ctsam.io.image import read_geometry

    return read_geometry(path, case=case)


@dataclass(frozen=True)
class CoarseSummary:
    """What :func:`run_coarse` wrote."""

    out_path: Path
    sidecar_path: Path
    labels: dict[int, str]
    sidecar: dict


def _write(
    out_path: Path,
    sidecar_path: Path,
    array,
    ct: Geometry,
    attempted: dict[int, str],
    sidecar: dict,
) -> CoarseSummary:
    from ctsam.coarse.mapping import class_summary
    from ctsam.io.image import write_labelmap
    from ctsam.volume import LabelMap

    found = class_summary(array, attempted, ct.voxel_volume_ml)
    present = {info["id"]: name for name, info in found.items()}
    write_labelmap(out_path, LabelMap(array=array, geometry=ct, labels=present))
    sidecar = {
        **sidecar,
        "label_space": LABEL_SPACE,
        "geometry": ct.to_dict(),
        "n_classes_found": len(found),
        "classes_found": found,
        "classes_absent": [name for index, name in sorted(attempted.items()) if index not in present],
    }
    atomic_write_json(sidecar_path, sidecar)
    log.info("wrote %s: %d classes (%s)", out_path.name, len(found), sidecar["backend"])
    return CoarseSummary(out_path, sidecar_path, present, sidecar)


def _sha256(path: Path) -> str:
    """sha256 of a file, or of a folder of masks (over its files' relative names and digests)."""
    from ctsam.provenance import sha256_file

    if path.is_dir():
        from ctsam.provenance import sha256_dir

        return sha256_dir(path)[0]
    return sha256_file(path)


def _head(backend: str, ct_path: Path, case: str | None) -> dict:
    from ctsam.provenance import sha256_file

    return {
        "ctsam_version": __version__,
        "stage": "coarse",
        "case": case,
        "backend": backend,
        "ct": {"file": ct_path.name, "sha256": sha256_file(ct_path)},
    }


def run_totalsegmentator_backend(
    ct_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    opts,
    *,
    unknown: str = "drop",
    workdir: str | os.PathLike[str] | None = None,
    keep_workdir: bool = False,
    sidecar_path: str | os.PathLike[str] | None = None,
    case: str | None = None,
) -> CoarseSummary:
    """TotalSegmentator on ``ct_path`` -> coarse label map ``out_path`` (see the module docstring)."""
    from ctsam.coarse.totalseg import preflight, provenance_from_report, run_totalsegmentator

    ct_path, out_path = Path(ct_path), Path(out_path)
    weights_root = preflight(opts, case=case)  # before anything else: seconds, exit 2
    job_dir = Path(workdir) if workdir else out_path.parent / f".{sidecar_tsv_path(out_path).stem}.totalseg_job"
    job_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ts_input = ct_path
    if ct_path.exists() and not _is_nifti(ct_path):
        # TotalSegmentator treats anything that is not .nii/.nii.gz as DICOM
        from ctsam.io.image import read_image, write_ct
        from ctsam.volume import CTVolume

        array, geometry, _ = read_image(ct_path, case=case)
        ts_input = job_dir / "ct.nii.gz"
        write_ct(ts_input, CTVolume(array=array, geometry=geometry))

    def while_running() -> tuple:
        # CT grid, CT digest and the heavy imports overlap with TotalSegmentator's own start-up
        from ctsam.coarse.mapping import relabel  # noqa: F401 - warm import
        from ctsam.io.image import read_labelmap  # noqa: F401 - warm import

        return ct_geometry(ct_path, case=case), _head("totalsegmentator", ct_path, case)

    if not ct_path.exists():
        ct_geometry(ct_path, case=case)  # raises the precise "image not found" error
    run, (ct, head) = run_totalsegmentator(
        ts_input, job_dir, opts, case=case, weights_root=weights_root, while_running=while_running
    )
    from ctsam.coarse.mapping import relabel
    from ctsam.io.image import read_labelmap
    from ctsam.volume import check_same_space

    seg = read_labelmap(run.seg_path, case=case)
    names = seg.labels
    names_source = "output header"
    if not any(not n.startswith("label_") for n in names.values()):
        if run.report and run.report.get("classes"):
            names = {int(k): v for k, v in run.report["classes"].items()}
            names_source = "--report classes"
        else:
            raise ConfigError(
                "TotalSegmentator output carries no label names",
                case=case,
                path=run.seg_path,
                expected="a label table in the NIfTI header (TotalSegmentator >= 2.0 with -ml)",
                found="no header label table and no --report classes",
                fix="use TotalSegmentator 2.18 (envs/totalsegmentator.yaml)",
            )
    check_same_space(ct, seg.geometry, name_a="CT", name_b="TotalSegmentator output", case=case)
    rel = relabel(seg.array, names, unknown=unknown)
    sidecar = head
    sidecar.update(
        {
            "options": {
                "task": "total",
                "mode": opts.mode,
                "device": opts.device,
                "roi_subset": list(opts.roi_subset),
                "robust_crop": opts.robust_crop,
                "threads_resampling": opts.threads_resampling,
                "threads_saving": opts.threads_saving,
            },
            "label_names_from": names_source,
            "unknown_names": rel.unknown,
            "unknown_policy": unknown,
            "provenance": {
                **provenance_from_report(run.report),
                "weights_root": str(weights_root),
                "command": _placeholder_command(run.command, ts_input, job_dir),
                "device_fallback_to_cpu": run.device_fallback,
            },
            "warnings": list(run.warnings),
        }
    )
    side_path = Path(sidecar_path) if sidecar_path else sidecar_path_for(out_path)
    summary = _write(out_path, side_path, rel.array, ct, rel.labels, sidecar)
    log.info("coarse stage (TotalSegmentator) done in %.1f s", time.perf_counter() - t0)
    if not keep_workdir:
        shutil.rmtree(job_dir, ignore_errors=True)
    return summary


def _placeholder_command(cmd: list[str], ct: Path, job_dir: Path) -> list[str]:
    """The TotalSegmentator command with job-specific paths replaced by placeholders."""
    ct, job_dir = Path(ct).resolve(), Path(job_dir).resolve()
    out = [Path(cmd[0]).name]
    for arg in cmd[1:]:
        if arg == str(ct):
            out.append("{ct}")
        elif arg.startswith(str(job_dir) + os.sep):
            out.append("{job}/" + Path(arg).name)
        else:
            out.append(arg)
    return out


def run_labels_backend(
    ct_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    label_table: str | os.PathLike[str] | None = None,
    resample: bool = False,
    extent_tolerance_mm: float = 1.0,
    unknown: str = "drop",
    sidecar_path: str | os.PathLike[str] | None = None,
    case: str | None = None,
) -> CoarseSummary:
    """A user label map (or mask folder) -> coarse label map on the CT grid."""
    from ctsam.coarse.mapping import relabel
    from ctsam.coarse.userlabels import fit_to_ct_grid, read_user_labels

    ct_path, out_path, labels_path = Path(ct_path), Path(out_path), Path(labels_path)
    ct = ct_geometry(ct_path, case=case)
    user = read_user_labels(labels_path, label_table=label_table, case=case)
    array, resampled = fit_to_ct_grid(
        user, ct, allow_resample=resample, extent_tolerance_mm=extent_tolerance_mm, case=case, path=labels_path
    )
    rel = relabel(array, user.labels, unknown=unknown)
    sidecar = _head("labels", ct_path, case)
    sidecar.update(
        {
            "options": {"resample": resample, "extent_tolerance_mm": extent_tolerance_mm},
            "labels_input": {
                # by content, not name: a user's label file is often named after the patient
                "sha256": _sha256(labels_path),
                "names_from": user.source,
                "n_labels": len(user.labels),
                "resampled_from": user.geometry.to_dict() if resampled else None,
                "overlap_voxels": user.overlap_voxels,
            },
            "name_matches": {
                raw: {"name": name, "how": how} for raw, (name, how) in sorted(rel.matches.items()) if how != "exact"
            },
            "merged": rel.merged,
            "unknown_names": rel.unknown,
            "unknown_policy": unknown,
            "dropped_voxels": rel.dropped_voxels,
            "provenance": {"source": "user-supplied labels", "labels_sha256": _sha(labels_path, label_table)},
            "warnings": [f"unknown label name: {n}" for n in rel.unknown],
        }
    )
    side_path = Path(sidecar_path) if sidecar_path else sidecar_path_for(out_path)
    return _write(out_path, side_path, rel.array, ct, rel.labels, sidecar)


def _sha(labels_path: Path, label_table) -> str:
    """sha256 over (file name, content digest) of the label inputs; independent of their folder."""
    import hashlib

    from ctsam.provenance import sha256_file

    files = sorted(p for p in labels_path.iterdir() if p.is_file()) if labels_path.is_dir() else [labels_path]
    if label_table is not None:
        files.append(Path(label_table))
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()
