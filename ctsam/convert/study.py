"""The convert stage: scan a study folder, choose a series, validate it, write NIfTI + sidecar."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from ctsam.convert.geometry import GeometryTolerances, SliceStack, validate_stack
from ctsam.convert.selection import Selection, select_series
from ctsam.convert.sidecar import build_sidecar
from ctsam.convert.stacks import split_stacks
from ctsam.convert.studies import choose_study
from ctsam.convert.volume import VolumeReport, build_volume
from ctsam.errors import ConfigError, DicomSeriesError
from ctsam.io.atomic import atomic_write_json
from ctsam.io.dicom import ScanResult, group_series, scan_dicom_files
from ctsam.volume import CTVolume

log = logging.getLogger(__name__)

TILT_MODES = ("error", "resample")
UNEVEN_MODES = ("error", "resample")
UNEVEN_TARGETS = ("median", "smallest")


@dataclass(frozen=True)
class ConvertOptions:
    """Settings of the convert stage (config section ``convert``; CLI flags override).

    Attributes:
        tilt: ``error`` refuses gantry-tilted series, ``resample`` corrects them.
        series_uid: convert this series (SeriesInstanceUID or ``auto-...`` key) instead of the best.
        compresslevel: gzip level of ``.nii.gz`` output (see :mod:`ctsam.convert.nifti`).
        prefer_kernels: reconstruction kernels ranked before all others, in this order.
        study_uid: convert this StudyInstanceUID when the input holds several studies.
        uneven_spacing: ``error`` refuses uneven slice spacing, ``resample`` interpolates linearly
            in z onto equal spacing.
        uneven_target: the spacing resampled onto: the ``median`` or the ``smallest`` slice step.
    """

    spacing_tolerance_mm: float = 0.05
    orientation_tolerance: float = 0.001
    tilt: str = "error"
    tilt_tolerance_deg: float = 0.1
    min_slices: int = 3
    series_uid: str | None = None
    compresslevel: int = 1
    prefer_kernels: tuple[str, ...] = ()
    study_uid: str | None = None
    uneven_spacing: str = "error"
    uneven_target: str = "median"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefer_kernels", tuple(str(k) for k in self.prefer_kernels))
        for name, value, allowed, flag in (
            ("uneven_spacing", self.uneven_spacing, UNEVEN_MODES, "--uneven-spacing error|resample"),
            ("uneven_target", self.uneven_target, UNEVEN_TARGETS, "convert.uneven_target: median|smallest"),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"invalid convert.{name}",
                    expected=" or ".join(allowed),
                    found=repr(value),
                    fix=f"set convert.{name} in the config ({flag})",
                )
        if self.tilt not in TILT_MODES:
            raise ConfigError(
                "invalid gantry tilt policy",
                expected=" or ".join(TILT_MODES),
                found=repr(self.tilt),
                fix="set convert.tilt in the config, or pass --tilt error|resample",
            )

    @classmethod
    def from_config(cls, section: dict[str, Any], **overrides: Any) -> "ConvertOptions":
        """Options from the ``convert`` config section; ``overrides`` that are not None win."""
        keys = (
            "spacing_tolerance_mm",
            "orientation_tolerance",
            "tilt",
            "tilt_tolerance_deg",
            "min_slices",
            "prefer_kernels",
            "uneven_spacing",
            "uneven_target",
        )
        values = {k: section[k] for k in keys if k in section}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def tolerances(self) -> GeometryTolerances:
        return GeometryTolerances(
            spacing_tolerance_mm=self.spacing_tolerance_mm,
            orientation_tolerance=self.orientation_tolerance,
            tilt_tolerance_deg=self.tilt_tolerance_deg,
            min_slices=self.min_slices,
            uneven="allow" if self.uneven_spacing == "resample" else "error",
        )


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert_study` produced."""

    volume: CTVolume
    sidecar: dict[str, Any]
    selection: Selection
    stack: SliceStack
    report: VolumeReport


def convert_study(
    study_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None,
    *,
    sidecar_path: str | os.PathLike[str] | None = None,
    options: ConvertOptions | None = None,
) -> ConvertResult:
    """Convert the CT series of a DICOM study folder into an int16 HU volume.

    Args:
        study_dir: folder searched recursively for DICOM files.
        out_path: NIfTI to write (``.nii.gz`` or ``.nii``), atomically; None writes nothing.
        sidecar_path: JSON sidecar to write, atomically; None writes none.
        options: settings (defaults: :class:`ConvertOptions`).

    Raises:
        DicomSeriesError: no usable series, broken geometry (missing slices, duplicate positions,
            gantry tilt with ``tilt='error'``), or undecodable pixel data in the chosen series.
    """
    options = options or ConvertOptions()
    t0 = time.perf_counter()
    scan = scan_dicom_files(study_dir)
    if not scan.headers:
        raise DicomSeriesError(
            "no DICOM files found",
            path=study_dir,
            expected="DICOM Part-10 files (any names, nested folders are searched)",
            found=f"{scan.n_other_files} other files, {len(scan.unreadable)} unreadable DICOM files",
            fix="point STUDY_DIR at the folder holding the study's DICOM files",
        )
    headers = choose_study(scan.headers, options.study_uid)
    groups = split_stacks(group_series(headers))
    selection = select_series(
        groups,
        min_slices=options.min_slices,
        series_uid=options.series_uid,
        position_tolerance_mm=options.spacing_tolerance_mm,
        prefer_kernels=options.prefer_kernels,
    )
    chosen = selection.chosen
    log.info("chosen series %s (%d slices): %s", chosen.key, chosen.n_files, selection.why)
    for cand, reasons in selection.rejected:
        if cand.group.series == chosen.group.series:
            log.warning(
                "dropped %d slice(s) of the chosen series %s (stack %s): %s",
                cand.n_files,
                chosen.group.series,
                cand.key,
                "; ".join(reasons),
            )
        else:
            log.info("not converted: series %s (%d slices): %s", cand.key, cand.n_files, "; ".join(reasons))
    t1 = time.perf_counter()

    stack = _validate(chosen.group.headers, chosen.key, options, scan, selection)
    if stack.tilted and options.tilt == "error":
        raise DicomSeriesError(
            f"series {chosen.key} was acquired with a gantry tilt of {stack.tilt_deg:.2f} degrees",
            path=study_dir,
            expected=f"slices stacked along their normal (tilt <= {options.tilt_tolerance_deg} degrees)",
            found=f"gantry tilt {stack.tilt_deg:.2f} degrees "
            f"(DICOM GantryDetectorTilt: {chosen.group.first.acquisition.get('GantryDetectorTilt')})",
            fix="pass --tilt resample (or set convert.tilt: resample) to resample onto an orthogonal grid",
        )
    if stack.tilted:
        log.warning("gantry tilt of %.2f degrees: resampling onto an orthogonal grid", stack.tilt_deg)

    volume, report = build_volume(stack, resample_tilt=stack.tilted)
    t2 = time.perf_counter()
    settings = asdict(options)
    settings["study_uid"] = "given (--study-uid)" if options.study_uid else None  # the UID itself stays out
    sidecar = build_sidecar(
        scan=scan, selection=selection, stack=stack, geometry=volume.geometry, report=report, settings=settings
    )
    if out_path is not None:
        from ctsam.io.image import write_ct

        write_ct(out_path, volume, compresslevel=options.compresslevel)
    if sidecar_path is not None:
        atomic_write_json(sidecar_path, sidecar)
    t3 = time.perf_counter()
    log.info(
        "converted %s: %s (scan+select %.2f s, decode %.2f s, write %.2f s)",
        chosen.key,
        volume.geometry.describe(),
        t1 - t0,
        t2 - t1,
        t3 - t2,
    )
    return ConvertResult(volume=volume, sidecar=sidecar, selection=selection, stack=stack, report=report)


def _validate(headers, key: str, options: ConvertOptions, scan: ScanResult, selection: Selection) -> SliceStack:
    headers = _drop_copies(headers)
    broken = [h for h in headers if h.pixel_problem]
    if broken:
        listed = "; ".join(f"{h.rel}: {h.pixel_problem}" for h in broken[:5])
        raise DicomSeriesError(
            f"{len(broken)} file(s) of the chosen series {key} are corrupt",
            path=scan.root,
            expected="complete pixel data in every slice",
            found=listed + (f" (and {len(broken) - 5} more)" if len(broken) > 5 else ""),
            fix="re-copy the series from the archive (these slices are needed: no other copy exists)",
        )
    try:
        return validate_stack(headers, options.tolerances, series=key)
    except DicomSeriesError as err:
        notes = []
        if scan.unreadable:
            names = ", ".join(rel for rel, _ in scan.unreadable[:5])
            notes.append(f"{len(scan.unreadable)} unreadable DICOM file(s) were skipped ({names})")
        if selection.eligible_alternatives:
            notes.append("other CT series in the study: " + ", ".join(selection.eligible_alternatives[:5]))
        if not notes:
            raise
        raise DicomSeriesError(
            err.what,
            path=err.path or scan.root,
            expected=err.expected,
            found=(err.found or "") + "; " + "; ".join(notes),
            fix=err.fix,
        ) from err


def _drop_copies(headers):
    """Keep one file per (SOPInstanceUID, position): copies of one instance are not duplicate slices."""
    seen: dict[tuple, str] = {}
    kept = []
    for h in sorted(headers, key=lambda h: (h.pixel_problem is not None, h.rel)):  # intact copies first
        ident = (h.sop_instance_uid, h.ipp_xyz_mm)
        if h.sop_instance_uid and ident in seen:
            log.warning("%s is a copy of %s (same SOPInstanceUID and position); using the latter", h.rel, seen[ident])
            continue
        if h.sop_instance_uid:
            seen[ident] = h.rel
        kept.append(h)
    return sorted(kept, key=lambda h: h.rel)
