"""Slice-stack geometry checks, done on DICOM headers before any pixel is decoded.

A series is a stack of 2-D slices. With ``r`` and ``c`` the row and column direction cosines from
ImageOrientationPatient and ``n = r x c`` the slice normal (all LPS), each slice ``k`` has the
position ``p_k`` (ImagePositionPatient, LPS mm). We check:

* one orientation, rows x columns and pixel spacing for every slice;
* slices sorted by their distance along the normal ``d_k = n . p_k``;
* no two slices at the same ``d`` (duplicate positions), at least two distinct positions;
* a uniform step along the normal (``|d_{k+1} - d_k - step| <= spacing_tolerance_mm``), where a step
  of about ``m * step`` means ``m - 1`` missing slices, whose positions are listed;
* gantry tilt: the in-plane offsets ``(r . (p_k - p_0), c . (p_k - p_0))`` must be a linear function
  of ``d_k - d_0`` (a constant shear); the tilt angle is ``atan(|shear|)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ctsam.errors import DicomSeriesError
from ctsam.io.dicom import DicomHeader

#: uneven-spacing resampling never bridges a step wider than this many median steps
UNEVEN_MAX_STEP_RATIO = 3.0


@dataclass(frozen=True)
class GeometryTolerances:
    """Tolerances of the checks (config section ``convert``)."""

    spacing_tolerance_mm: float = 0.05
    orientation_tolerance: float = 0.001
    tilt_tolerance_deg: float = 0.1
    min_slices: int = 3
    uneven: str = "error"


@dataclass(frozen=True)
class SliceStack:
    """A validated stack of slices, sorted along the slice normal.

    Attributes:
        headers: the slices, sorted by increasing ``d`` (distance along ``normal``).
        row_dir, col_dir, normal: unit vectors (LPS) of increasing column index, increasing row
            index, and the slice normal ``row_dir x col_dir``.
        pixel_spacing_mm: (between rows, between columns) in mm, i.e. (along col_dir, along row_dir).
        step_mm: distance between neighbouring slices along ``normal``, in mm.
        offsets_rc_mm: shape (n_slices, 2): in-plane offset of each slice's first pixel from the first
            slice's, along (row_dir, col_dir), in mm. All zero unless the gantry was tilted.
        tilt_deg: angle between the slice stacking direction and the slice normal, in degrees.
        tilted: tilt_deg exceeds the tolerance.
        uneven: the steps differ by more than the tolerance and ``uneven="allow"`` accepted them
            (``step_mm`` is then the median step).
    """

    headers: list[DicomHeader]
    row_dir: tuple[float, float, float]
    col_dir: tuple[float, float, float]
    normal: tuple[float, float, float]
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]
    step_mm: float
    offsets_rc_mm: np.ndarray
    tilt_deg: float
    tilted: bool
    uneven: bool = False

    @property
    def n_slices(self) -> int:
        return len(self.headers)

    def distances_mm(self) -> np.ndarray:
        """Position of every slice along ``normal`` (``n . p_k``, mm), increasing."""
        return self.positions_mm() @ np.asarray(self.normal, dtype=float)

    @property
    def first_position_mm(self) -> np.ndarray:
        return np.asarray(self.headers[0].ipp_xyz_mm, dtype=float)

    def positions_mm(self) -> np.ndarray:
        """ImagePositionPatient of every slice in stack order, shape (n_slices, 3), LPS mm."""
        return np.asarray([h.ipp_xyz_mm for h in self.headers], dtype=float)


def slice_step_estimate(headers: list[DicomHeader]) -> float | None:
    """Median distance between distinct neighbouring slice positions along the normal (mm), or None.

    A cheap estimate used to rank candidate series before their geometry is validated.
    """
    usable = [h for h in headers if h.ipp_xyz_mm is not None and h.iop is not None]
    if len(usable) < 2:
        return None
    iop = np.asarray(usable[0].iop, dtype=float)
    r, c = iop[:3], iop[3:]
    n = np.cross(r, c)
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        return None
    d = np.unique(np.round(np.asarray([h.ipp_xyz_mm for h in usable]) @ (n / norm), 3))
    if len(d) < 2:
        return None
    return float(np.median(np.diff(d)))


def slice_extent_mm(headers: list[DicomHeader]) -> float | None:
    """Distance between the first and the last slice position along the normal (mm), or None (coverage)."""
    usable = [h for h in headers if h.ipp_xyz_mm is not None and h.iop is not None]
    if not usable or usable[0].iop is None:
        return None
    iop = usable[0].iop
    n = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        return None
    d = np.asarray([h.ipp_xyz_mm for h in usable]) @ (n / norm)
    return float(d.max() - d.min())


def distinct_positions(headers: list[DicomHeader], tolerance_mm: float = 0.05) -> int:
    """Number of distinct slice positions along the normal."""
    usable = [h for h in headers if h.ipp_xyz_mm is not None and h.iop is not None]
    if not usable:
        return 0
    iop = np.asarray(usable[0].iop, dtype=float)
    n = np.cross(iop[:3], iop[3:])
    n = n / max(np.linalg.norm(n), 1e-12)
    d = np.sort(np.asarray([h.ipp_xyz_mm for h in usable]) @ n)
    return int(1 + np.count_nonzero(np.diff(d) > tolerance_mm))


def validate_stack(headers: list[DicomHeader], tol: GeometryTolerances, *, series: str = "") -> SliceStack:
    """Check the geometry of one series and return it as a sorted :class:`SliceStack`.

    Args:
        headers: the files of one series.
        tol: tolerances.
        series: a label for messages (series UID or key).

    Raises:
        DicomSeriesError: missing geometry tags, inconsistent orientation/size/spacing, fewer than two
            distinct positions, duplicate positions, missing slices, irregular spacing, or an
            in-plane drift that is not a constant gantry tilt.
    """
    where = f"series {series}" if series else "series"
    _require_tags(headers, where)
    first = headers[0]
    _check_same(headers, where, "Rows x Columns", lambda h: (h.rows, h.columns))
    _check_same(headers, where, "PixelSpacing", lambda h: tuple(round(v, 4) for v in h.pixel_spacing_mm))
    iops = np.asarray([h.iop for h in headers], dtype=float)
    deviation = np.max(np.abs(iops - iops[0]), axis=1)
    if np.any(deviation > tol.orientation_tolerance):
        bad = [headers[i].rel for i in np.flatnonzero(deviation > tol.orientation_tolerance)[:5]]
        raise DicomSeriesError(
            f"slices of {where} have different orientations",
            expected=f"one ImageOrientationPatient (within {tol.orientation_tolerance}) for every slice",
            found=f"{first.rel}: {list(first.iop)}; differing, e.g. {', '.join(bad)}",  # type: ignore[arg-type]
            fix="the folder mixes several stacks (e.g. a localizer or reformats) under one series; "
            "separate them or choose another series with --series-uid",
        )
    r = np.asarray(first.iop[:3], dtype=float)  # type: ignore[index]
    c = np.asarray(first.iop[3:], dtype=float)  # type: ignore[index]
    r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
    if abs(float(r @ c)) > 1e-3:
        raise DicomSeriesError(
            f"ImageOrientationPatient of {where} is not orthogonal",
            expected="row and column cosines at 90 degrees",
            found=f"{list(first.iop)} (cos = {float(r @ c):.4f})",  # type: ignore[arg-type]
            fix="the DICOM headers are corrupt; re-export the series",
        )
    c = c - (r @ c) * r
    c /= np.linalg.norm(c)
    n = np.cross(r, c)

    positions = np.asarray([h.ipp_xyz_mm for h in headers], dtype=float)
    d_all = positions @ n
    order = sorted(range(len(headers)), key=lambda i: (d_all[i], headers[i].instance_number or 0, headers[i].rel))
    headers = [headers[i] for i in order]
    positions, d = positions[order], d_all[order]

    _check_duplicates(headers, d, tol, where)
    if len(headers) < tol.min_slices:
        raise DicomSeriesError(
            f"{where} is not a volume",
            expected=f"at least {tol.min_slices} slices at distinct positions (config convert.min_slices)",
            found=f"{len(headers)} slices",
            fix="choose a volumetric CT series with --series-uid",
        )
    steps = np.diff(d)
    step = float(np.median(steps))
    uneven = _check_spacing(headers, positions, d, steps, step, n, tol, where)

    rel = positions - positions[0]
    offsets = np.stack([rel @ r, rel @ c], axis=1)  # (n_slices, 2): along row_dir, col_dir
    dd = (d - d[0])[:, None]
    shear = np.linalg.lstsq(dd, offsets, rcond=None)[0][0]  # in-plane mm per mm along the normal
    residual = offsets - dd * shear
    worst = float(np.max(np.linalg.norm(residual, axis=1)))
    if worst > tol.spacing_tolerance_mm:
        k = int(np.argmax(np.linalg.norm(residual, axis=1)))
        raise DicomSeriesError(
            f"slice positions of {where} drift irregularly within the slice plane",
            expected="positions on a straight line (a constant gantry tilt at most), "
            f"within {tol.spacing_tolerance_mm} mm",
            found=f"{headers[k].rel} lies {worst:.3f} mm off the line through the other slices",
            fix="the series mixes stacks or has corrupt positions; choose another series with --series-uid",
        )
    tilt_deg = math.degrees(math.atan(float(np.linalg.norm(shear))))
    tilted = tilt_deg > tol.tilt_tolerance_deg
    if not tilted:
        offsets = np.zeros_like(offsets)
    return SliceStack(
        headers=headers,
        row_dir=tuple(r),  # type: ignore[arg-type]
        col_dir=tuple(c),  # type: ignore[arg-type]
        normal=tuple(n),  # type: ignore[arg-type]
        rows=int(first.rows),  # type: ignore[arg-type]
        columns=int(first.columns),  # type: ignore[arg-type]
        pixel_spacing_mm=tuple(first.pixel_spacing_mm),  # type: ignore[arg-type]
        step_mm=step,
        offsets_rc_mm=offsets,
        tilt_deg=tilt_deg,
        tilted=tilted,
        uneven=uneven,
    )


def _require_tags(headers: list[DicomHeader], where: str) -> None:
    for tag, attr in (
        ("ImagePositionPatient", "ipp_xyz_mm"),
        ("ImageOrientationPatient", "iop"),
        ("PixelSpacing", "pixel_spacing_mm"),
        ("Rows", "rows"),
        ("Columns", "columns"),
    ):
        missing = [h.rel for h in headers if getattr(h, attr) is None]
        if missing:
            raise DicomSeriesError(
                f"slices of {where} lack {tag}",
                expected=f"a valid {tag} in every slice",
                found=f"missing or malformed in {len(missing)} of {len(headers)} files, e.g. {', '.join(missing[:3])}",
                fix="this is not a volumetric CT series (or its headers are damaged); choose another with --series-uid",
            )


def _check_same(headers: list[DicomHeader], where: str, what: str, value) -> None:
    values: dict[object, str] = {}
    for h in headers:
        values.setdefault(value(h), h.rel)
    if len(values) > 1:
        found = "; ".join(f"{v} (e.g. {rel})" for v, rel in list(values.items())[:4])
        raise DicomSeriesError(
            f"slices of {where} differ in {what}",
            expected=f"one {what} for every slice",
            found=found,
            fix="the folder mixes several stacks under one series; choose another series with --series-uid",
        )


def _check_duplicates(headers: list[DicomHeader], d: np.ndarray, tol: GeometryTolerances, where: str) -> None:
    same = np.diff(d) <= tol.spacing_tolerance_mm
    if not np.any(same):
        if len(headers) < 2:
            raise DicomSeriesError(
                f"{where} is not a volume",
                expected="at least two slices at distinct positions",
                found="a single slice",
                fix="choose a volumetric CT series with --series-uid",
            )
        return
    clusters: list[list[int]] = []
    for i in range(len(headers)):
        if i > 0 and same[i - 1]:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    dup = [cl for cl in clusters if len(cl) > 1]
    described = "; ".join(
        f"{len(cl)} slices at position {_fmt_xyz(headers[cl[0]].ipp_xyz_mm)} "
        f"({', '.join(headers[i].rel for i in cl[:4])}{', ...' if len(cl) > 4 else ''})"
        for cl in dup[:5]
    )
    if len(clusters) == 1:
        what = f"{where} is not a volume: all {len(headers)} slices share one position (duplicate position)"
    else:
        what = f"{where} has duplicate slice positions ({len(dup)} positions hold more than one slice)"
    raise DicomSeriesError(
        what,
        expected="exactly one slice per position along the slice normal",
        found=f"duplicate position: {described}",
        fix="the folder holds several acquisitions or copies of one series (or a 4-D series); "
        "keep one copy per slice, or split the acquisitions into separate folders",
    )


def _check_spacing(
    headers: list[DicomHeader],
    positions: np.ndarray,
    d: np.ndarray,
    steps: np.ndarray,
    step: float,
    n: np.ndarray,
    tol: GeometryTolerances,
    where: str,
) -> bool:
    """Raise on missing slices or (unless ``tol.uneven == "allow"``) uneven steps; True if uneven but allowed.

    With ``uneven="allow"``, steps that look like missing slices (integer multiples of the median
    step) are still an error when they are isolated (at most 10 % of the steps, the rest uniform),
    and no step may exceed ``UNEVEN_MAX_STEP_RATIO`` times the median step (a gap is never bridged).
    """
    off = np.abs(steps - step) > tol.spacing_tolerance_mm
    if not np.any(off):
        return False
    missing_positions: list[str] = []
    irregular: list[str] = []
    for k in np.flatnonzero(off):
        ratio = steps[k] / step
        m = int(round(ratio))
        if m >= 2 and abs(steps[k] - m * step) <= tol.spacing_tolerance_mm * m:
            direction = (positions[k + 1] - positions[k]) / m
            for j in range(1, m):
                missing_positions.append(_fmt_xyz(positions[k] + j * direction))
        else:
            irregular.append(f"{steps[k]:.3f} mm between {headers[k].rel} and {headers[k + 1].rel}")
    if tol.uneven == "allow":
        isolated_missing = not irregular and np.count_nonzero(off) <= 0.1 * len(steps)
        if not isolated_missing:
            worst = int(np.argmax(steps))
            if steps[worst] > UNEVEN_MAX_STEP_RATIO * step:
                raise DicomSeriesError(
                    f"{where} has a gap too wide to resample across",
                    expected=f"slice steps of at most {UNEVEN_MAX_STEP_RATIO:g} x the median step ({step:.3f} mm) "
                    "for uneven-spacing resampling",
                    found=f"{steps[worst]:.3f} mm between {headers[worst].rel} and {headers[worst + 1].rel}",
                    fix="the series has a gap (missing slices, or two separate ranges): re-copy the complete "
                    "series, or convert each range separately",
                )
            return True
    if irregular:
        raise DicomSeriesError(
            f"slice spacing of {where} is not uniform",
            expected=f"a constant step of {step:.3f} mm "
            f"(+- {tol.spacing_tolerance_mm} mm, config convert.spacing_tolerance_mm)",
            found="; ".join(irregular[:5]) + (f" (and {len(irregular) - 5} more)" if len(irregular) > 5 else ""),
            fix="pass --uneven-spacing resample (or set convert.uneven_spacing: resample) to interpolate onto "
            "equal spacing; or re-export the series (the spacings are mixed or a position is damaged)",
        )
    listed = ", ".join(missing_positions[:20])
    if len(missing_positions) > 20:
        listed += f" (and {len(missing_positions) - 20} more)"
    raise DicomSeriesError(
        f"{where} has missing slices: {len(missing_positions)} slice(s) absent",
        expected=f"{len(headers) + len(missing_positions)} slices every {step:.3f} mm along the slice normal",
        found=f"{len(headers)} slices; missing slice positions (LPS mm): {listed}",
        fix="re-copy the complete series from the archive (a file may have been lost or unreadable)",
    )


def _fmt_xyz(p) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in p) + ")"
