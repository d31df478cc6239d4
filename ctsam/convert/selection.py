"""Choosing the CT series to convert from the series found in a study.

Rules (applied in this order; every rejected series is reported with its reasons):

1. **Eligibility.** A series is rejected if any of these holds: Modality is not ``CT``; the SOP
   class is not CT Image Storage (``1.2.840.10008.5.1.4.1.1.2``; SOPClassUID, or the file meta
   MediaStorageSOPClassUID when that is empty; multi-frame Enhanced CT is not supported yet);
   a file holds more than one frame or more than one sample per pixel; ImageType says
   LOCALIZER; it has fewer than ``min_slices`` distinct slice positions; its files lack
   ImagePositionPatient / ImageOrientationPatient.
2. **Ranking** of the eligible series, first criterion that differs wins:
   (a) ImageType ORIGINAL with AXIAL before anything else (derived, reformatted, secondary);
   (b) more distinct slice positions; (c) thinner slice spacing (median step along the normal);
   (d) the series key in alphabetical order, so the choice is deterministic.
3. **By hand.** ``series_uid`` (``--series-uid``) picks that series (a SeriesInstanceUID, or an
   ``auto-...`` key for series without one) whatever its rank; it must still be eligible.

The chosen series' geometry is validated afterwards; a failure there is an error, never a silent
fall-back to a lower-ranked series (the error names the alternatives).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctsam.convert.geometry import distinct_positions, slice_step_estimate
from ctsam.errors import DicomSeriesError
from ctsam.io.dicom import CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, SeriesGroup


@dataclass(frozen=True)
class Candidate:
    """One series found in the study, summarised for selection and for the sidecar.

    Attributes:
        key: SeriesInstanceUID or ``auto-<hash>``.
        n_files: number of files.
        n_positions: number of distinct slice positions along the normal.
        step_mm: median slice step along the normal (mm), or None.
        reasons: why the series is not eligible (empty if it is).
    """

    group: SeriesGroup
    n_files: int
    n_positions: int
    step_mm: float | None
    original_axial: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.group.key

    @property
    def eligible(self) -> bool:
        return not self.reasons

    def summary(self) -> dict:
        """JSON-ready description (allow-listed fields only)."""
        first = self.group.first
        return {
            "series_key": self.key,
            "grouped_by": self.group.grouped_by,
            "modality": first.modality or None,
            "series_number": first.series_number,
            "series_description": first.acquisition.get("SeriesDescription"),
            "image_type": list(first.image_type),
            "n_files": self.n_files,
            "n_slice_positions": self.n_positions,
            "slice_step_mm": None if self.step_mm is None else round(self.step_mm, 4),
        }

    def rank_key(self) -> tuple:
        step = self.step_mm if self.step_mm is not None else float("inf")
        return (not self.original_axial, -self.n_positions, step, self.key)


@dataclass(frozen=True)
class Selection:
    """The chosen series and every rejected one (``(candidate, reasons)``), in rank order."""

    chosen: Candidate
    why: str
    rejected: list[tuple[Candidate, list[str]]]
    eligible_alternatives: list[str]


def assess(group: SeriesGroup, *, min_slices: int, position_tolerance_mm: float = 0.05) -> Candidate:
    """Summarise one series and list why it cannot be used (empty list: eligible)."""
    headers = group.headers
    first = group.first
    reasons: list[str] = []
    modalities = sorted({h.modality or "(none)" for h in headers})
    if modalities != ["CT"]:
        reasons.append(f"modality {'/'.join(modalities)} (expected CT)")
    sop_classes = sorted({h.sop_class_uid or "(none)" for h in headers})
    if ENHANCED_CT_IMAGE_STORAGE in sop_classes:
        reasons.append("multi-frame Enhanced CT Image Storage is not supported yet (export as single-frame CT)")
    elif sop_classes != [CT_IMAGE_STORAGE]:
        reasons.append(f"SOP class {'/'.join(sop_classes)} (expected CT Image Storage {CT_IMAGE_STORAGE})")
    if any(h.number_of_frames > 1 for h in headers):
        reasons.append("multi-frame files (expected one slice per file)")
    if any(h.samples_per_pixel != 1 for h in headers):
        reasons.append("colour images (expected one sample per pixel)")
    if any(h.is_localizer for h in headers):
        reasons.append("localizer (scout) images")
    missing_geometry = sum(h.ipp_xyz_mm is None or h.iop is None for h in headers)
    if missing_geometry:
        reasons.append(f"{missing_geometry} file(s) without ImagePositionPatient/ImageOrientationPatient")
    n_positions = distinct_positions(headers, position_tolerance_mm)
    if missing_geometry == 0 and n_positions < min_slices:
        if n_positions < len(headers):
            first_pos = ", ".join(f"{v:.2f}" for v in first.ipp_xyz_mm)  # type: ignore[union-attr]
            reasons.append(
                f"not a volume: its {len(headers)} files lie at only {n_positions} distinct slice position(s) "
                f"(duplicate position, e.g. ({first_pos}) in {first.rel}; min_slices {min_slices})"
            )
        else:
            reasons.append(f"not a volume: {n_positions} slice(s) (< min_slices {min_slices})")
    return Candidate(
        group=group,
        n_files=len(headers),
        n_positions=n_positions,
        step_mm=slice_step_estimate(headers),
        original_axial=all(h.is_original_axial for h in headers),
        reasons=reasons,
    )


def select_series(
    groups: list[SeriesGroup],
    *,
    min_slices: int,
    series_uid: str | None = None,
    position_tolerance_mm: float = 0.05,
) -> Selection:
    """Apply the module's rules to the series of a study.

    Raises:
        DicomSeriesError: no series is eligible, or ``series_uid`` is unknown or not eligible.
    """
    candidates = sorted(
        (assess(g, min_slices=min_slices, position_tolerance_mm=position_tolerance_mm) for g in groups),
        key=lambda c: c.rank_key(),
    )
    eligible = [c for c in candidates if c.eligible]
    listing = "; ".join(_describe(c) for c in candidates[:10]) + (" ..." if len(candidates) > 10 else "")
    if series_uid:
        matches = [c for c in candidates if c.key == series_uid]
        if not matches:
            raise DicomSeriesError(
                "the series asked for with --series-uid is not in the study",
                expected=f"one of: {', '.join(c.key for c in candidates)}",
                found=series_uid,
                fix="pass one of the series keys listed above",
            )
        chosen = matches[0]
        if not chosen.eligible:
            raise DicomSeriesError(
                "the series asked for with --series-uid cannot be converted",
                expected="a volumetric single-frame CT series",
                found=f"{chosen.key}: {'; '.join(chosen.reasons)}",
                fix="choose another series: " + listing,
            )
        why = "chosen by hand (--series-uid)"
        rejected = [
            (c, c.reasons or ["not the series chosen with --series-uid"]) for c in candidates if c is not chosen
        ]
    else:
        if not eligible:
            raise DicomSeriesError(
                "no usable CT series in the study",
                expected="a CT Image Storage series (modality CT) with at least "
                f"{min_slices} slices at distinct positions",
                found=listing or "no series",
                fix="check that the folder holds the CT study (not only localizers, reports or other modalities)",
            )
        chosen = eligible[0]
        why = (
            f"ranked first of {len(eligible)} eligible CT series "
            f"({'ORIGINAL/AXIAL' if chosen.original_axial else 'not ORIGINAL/AXIAL'}, "
            f"{chosen.n_positions} slice positions, step {_fmt_step(chosen.step_mm)})"
        )
        rejected = []
        for c in candidates:
            if c is chosen:
                continue
            rejected.append((c, c.reasons or [_lost_to(c, chosen)]))
    alternatives = [c.key for c in eligible if c is not chosen]
    return Selection(chosen=chosen, why=why, rejected=rejected, eligible_alternatives=alternatives)


def _lost_to(c: Candidate, chosen: Candidate) -> str:
    if c.original_axial != chosen.original_axial:
        return "ranked below the chosen series: its ImageType is not ORIGINAL/AXIAL"
    if c.n_positions != chosen.n_positions:
        return f"ranked below the chosen series: fewer slice positions ({c.n_positions} < {chosen.n_positions})"
    if c.step_mm != chosen.step_mm:
        return (
            "ranked below the chosen series: thicker slice spacing "
            f"({_fmt_step(c.step_mm)} > {_fmt_step(chosen.step_mm)})"
        )
    return "ties with the chosen series on every criterion; the series key sorts later (use --series-uid to choose it)"


def _fmt_step(step: float | None) -> str:
    return "unknown" if step is None else f"{step:.3f} mm"


def _describe(c: Candidate) -> str:
    desc = c.group.first.acquisition.get("SeriesDescription") or ""
    state = "eligible" if c.eligible else "; ".join(c.reasons)
    return f"{c.key} [{c.group.first.modality or '?'} '{desc}', {c.n_files} files]: {state}"
