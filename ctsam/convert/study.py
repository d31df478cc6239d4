"""The convert stage: scan a study folder, choose a series, validate it, write NIfTI + sidecar."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ctsam.convert.geometry import GeometryTolerances, SliceStack, validate_stack
from ctsam.convert.nifti import nifti_header_bytes, write_ct_nifti, write_nifti_slices
from ctsam.convert.selection import Selection, select_series
from ctsam.convert.sidecar import build_sidecar
from ctsam.convert.stacks import split_stacks
from ctsam.convert.studies import choose_study
from ctsam.convert.volume import VolumeReport, build_volume, output_geometry, plan_hu, stream_slices, streamable
from ctsam.errors import ConfigError, DicomSeriesError
from ctsam.io.atomic import atomic_write_json
from ctsam.io.dicom import ScanResult, group_series, scan_dicom_files
from ctsam.volume import CTVolume, Geometry

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
    compresslevel: int = 6
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
    def from_config(cls, section: dict[str, Any], **overrides: Any) -> ConvertOptions:
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
            "compresslevel",
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
    """What :func:`convert_study` produced.

    ``volume.array`` holds HU (int16, int32, float32, or float32/float64 for a file written as int16
    with scl_slope/scl_inter: see ``report``); None when the CLI streamed it to the file.
    """

    volume: CTVolume | None
    sidecar: dict[str, Any]
    selection: Selection
    stack: SliceStack
    report: VolumeReport

    def hu(self) -> np.ndarray:
        """The volume in HU (``volume.array``; it always holds HU, whatever the file's storage)."""
        if self.volume is None:
            raise ValueError("the volume was streamed to the file (keep_volume=False)")
        return self.volume.array


def convert_study(
    study_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None,
    *,
    sidecar_path: str | os.PathLike[str] | None = None,
    options: ConvertOptions | None = None,
    keep_volume: bool = True,
    guard: Callable[[np.ndarray, Geometry], object] | None = None,
) -> ConvertResult:
    """Convert the CT stack of a DICOM study folder into an HU volume (storage: ctsam.convert.volume).

    Args:
        study_dir: folder searched recursively for DICOM files.
        out_path: NIfTI to write (``.nii.gz`` or ``.nii``), atomically; None writes nothing.
        sidecar_path: JSON sidecar to write, atomically; None writes none.
        options: settings (defaults: :class:`ConvertOptions`).
        guard: called with the volume's HU range (a 2-element array: min, max, in the stored dtype, or
            float64 for scaled int16) and its geometry once every slice is decoded and before the
            NIfTI is committed; an exception it raises stops the conversion with nothing written
            (the CLI runs the input guards, :func:`ctsam.guards.check_ct`, here).
        keep_volume: return the volume in the result. False (the CLI) lets a plain stack stream from
            the decoder into the file without ever holding the volume (``result.volume`` is None).

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

    target = None
    if stack.uneven:
        steps = np.diff(stack.distances_mm())
        target = float(np.median(steps)) if options.uneven_target == "median" else float(steps.min())
    settings = asdict(options)
    settings["study_uid"] = "given (--study-uid)" if options.study_uid is not None else None  # the UID itself stays out
    plan = plan_hu(stack.headers)
    if out_path is not None and not keep_volume and streamable(stack, plan):
        # slices go from the decoder threads straight into the gzip writer: no volume in memory
        geometry = output_geometry(stack, (stack.rows, stack.columns), np.zeros(2))
        report = VolumeReport(
            clipped_voxels=0,
            rescale=sorted({(h.rescale_slope, h.rescale_intercept) for h in stack.headers}),
            tilt_resampled=False,
            hu_dtype=plan.dtype,
            scl_slope_inter=plan.scl,
            hu_storage=plan.why,
        )
        sidecar = build_sidecar(
            scan=scan, selection=selection, stack=stack, geometry=geometry, report=report, settings=settings
        )
        head = nifti_header_bytes(geometry.shape_zyx, plan.dtype, geometry, plan.scl)
        slices = _guarded(stream_slices(stack, plan), plan.scl, geometry, guard)
        write_nifti_slices(out_path, head, slices, compresslevel=options.compresslevel)
        volume = None
        t2 = time.perf_counter()
    else:
        volume, report = build_volume(stack, resample_tilt=stack.tilted, uneven_target_mm=target)
        geometry = volume.geometry
        t2 = time.perf_counter()
        sidecar = build_sidecar(
            scan=scan, selection=selection, stack=stack, geometry=geometry, report=report, settings=settings
        )
        if guard is not None:
            guard(
                _hu_range(volume.array.min(), volume.array.max(), volume.array.dtype, report.scl_slope_inter), geometry
            )
        if out_path is not None:
            write_ct_nifti(out_path, volume, scl=report.scl_slope_inter, compresslevel=options.compresslevel)
        if report.scl_slope_inter is not None:
            # the file holds stored values + scl; callers of the API get HU (float32 where exact, else float64)
            volume = CTVolume(array=_scaled_to_hu(volume.array, report.scl_slope_inter), geometry=geometry)
    if sidecar_path is not None:
        atomic_write_json(sidecar_path, sidecar)
    t3 = time.perf_counter()
    log.info(
        "converted %s: %s (scan+select %.2f s, decode %.2f s, write %.2f s%s)",
        chosen.key,
        geometry.describe(),
        t1 - t0,
        t2 - t1,
        t3 - t2,
        "; decode and write overlap: streamed" if volume is None else "",
    )
    return ConvertResult(volume=volume, sidecar=sidecar, selection=selection, stack=stack, report=report)


def _scaled_to_hu(stored: np.ndarray, scl: tuple[float, float]) -> np.ndarray:
    hu = stored.astype(np.float64) * scl[0] + scl[1]
    hu32 = hu.astype(np.float32)
    return hu32 if np.array_equal(hu32, hu) else hu


def _hu_range(lo: Any, hi: Any, dtype: np.dtype, scl: tuple[float, float] | None) -> np.ndarray:
    if scl is None:
        return np.array([lo, hi], dtype=dtype)
    ends = np.array([lo, hi], dtype=np.float64) * scl[0] + scl[1]
    return np.sort(ends)


def _guarded(
    slices: Iterator[np.ndarray],
    scl: tuple[float, float] | None,
    geometry: Geometry,
    guard: Callable[[np.ndarray, Geometry], object] | None,
) -> Iterator[np.ndarray]:
    """Pass slices through, tracking the value range; after the last one, run ``guard`` (before commit)."""
    lo = hi = None
    for sl in slices:
        s_lo, s_hi = sl.min(), sl.max()
        lo = s_lo if lo is None or s_lo < lo else lo
        hi = s_hi if hi is None or s_hi > hi else hi
        yield sl
    if guard is not None and lo is not None:
        guard(_hu_range(lo, hi, np.asarray(lo).dtype, scl), geometry)


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
