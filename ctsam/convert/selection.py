"""Choosing the stack of CT slices to convert from the stacks found in a study.

Candidates are stacks (:mod:`ctsam.convert.stacks`): a series usually is one stack, but a localizer
or reformat sharing the axial series' UID is a stack of its own. Rules (every candidate that is
not converted is reported with its reasons):

1. **Eligibility.** A stack is rejected if any of these holds: Modality is not ``CT``; the SOP
   class is not CT Image Storage (``1.2.840.10008.5.1.4.1.1.2``), Enhanced CT
   (``...1.2.1``) or Legacy Converted Enhanced CT (``...1.2.2``) (SOPClassUID, or the file meta
   MediaStorageSOPClassUID when that is empty); a single-frame class file holds several frames, or
   a file has more than one sample per pixel; ImageType says LOCALIZER; it has fewer than
   ``min_slices`` distinct slice positions; its slices lack ImagePositionPatient /
   ImageOrientationPatient.
2. **Ranking** of the eligible stacks; each criterion keeps the candidates that are best on it
   (within its tolerance), the next one decides among those:

   (a) ImageType ORIGINAL with AXIAL before anything else (derived, reformatted, secondary);
   (b) the reconstruction kernel: kernels listed in ``convert.prefer_kernels`` first (in list
       order), then soft tissue/standard, medium, unknown, and last sharp (bone/lung/edge) kernels
       (:mod:`ctsam.convert.kernels`);
   (c) coverage: the extent along the slice normal, in mm (within one slice step of the best);
   (d) thinner slices (median step along the normal, within 0.01 mm);
   (e) a remaining tie is decided by the key in alphabetical order and **warned** about, naming
       ``--series-uid``.
3. **By hand.** ``series_uid`` (``--series-uid``) picks a stack key (``<series>#<n>``) or a series
   (SeriesInstanceUID or ``auto-...`` key; its best-ranked eligible stack) whatever its rank; it
   must still be eligible.

The chosen stack's geometry is validated afterwards; a failure there is an error, never a silent
fall-back to a lower-ranked stack (the error names the alternatives).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ctsam.convert.geometry import distinct_positions, slice_extent_mm, slice_step_estimate
from ctsam.convert.kernels import KernelClass, classify_kernel, preference_index
from ctsam.errors import DicomSeriesError
from ctsam.io.dicom import CT_IMAGE_STORAGE, MULTIFRAME_CT_CLASSES, SeriesGroup

log = logging.getLogger(__name__)

STEP_TIE_MM = 0.01
ELIGIBLE_SOP_CLASSES = (CT_IMAGE_STORAGE, *MULTIFRAME_CT_CLASSES)


@dataclass(frozen=True)
class Candidate:
    """One stack found in the study, summarised for selection and for the sidecar.

    Attributes:
        key: SeriesInstanceUID, ``auto-<hash>``, or ``<series key>#<n>`` for one stack of a split series.
        n_files: number of slices (files, or frames of multi-frame files).
        n_positions: number of distinct slice positions along the normal.
        step_mm: median slice step along the normal (mm), or None.
        coverage_mm: extent of the slice positions along the normal (mm), or None.
        kernel: the reconstruction kernel's class (how it ranks).
        prefer_index: position of the kernel in ``convert.prefer_kernels`` (their length if absent).
        preferred: the kernel is listed in ``convert.prefer_kernels``.
        reasons: why the stack is not eligible (empty if it is).
    """

    group: SeriesGroup
    n_files: int
    n_positions: int
    step_mm: float | None
    original_axial: bool
    coverage_mm: float | None = None
    kernel: KernelClass = field(default_factory=lambda: classify_kernel(None))
    prefer_index: int = 0
    reasons: list[str] = field(default_factory=list)
    preferred: bool = False

    @property
    def key(self) -> str:
        return self.group.key

    @property
    def eligible(self) -> bool:
        return not self.reasons

    @property
    def kernel_rank(self) -> tuple[int, int]:
        return (self.prefer_index, self.kernel.tier)

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
            "convolution_kernel": self.kernel.kernel,
            "kernel_class": self.kernel.label,
            "kernel_judged_from": self.kernel.source,
            "n_files": self.n_files,
            "n_slice_positions": self.n_positions,
            "coverage_mm": None if self.coverage_mm is None else round(self.coverage_mm, 3),
            "slice_step_mm": None if self.step_mm is None else round(self.step_mm, 4),
        }


@dataclass(frozen=True)
class Selection:
    """The chosen stack and every other one (``(candidate, reasons)``), in rank order.

    Attributes:
        tie: the candidates the chosen one tied with on every ranking criterion (decided by key).
    """

    chosen: Candidate
    why: str
    rejected: list[tuple[Candidate, list[str]]]
    eligible_alternatives: list[str]
    tie: list[str] = field(default_factory=list)


def assess(
    group: SeriesGroup,
    *,
    min_slices: int,
    position_tolerance_mm: float = 0.05,
    prefer_kernels: tuple[str, ...] = (),
) -> Candidate:
    """Summarise one stack and list why it cannot be used (empty list: eligible)."""
    headers = group.headers
    first = group.first
    reasons: list[str] = []
    modalities = sorted({h.modality or "(none)" for h in headers})
    if modalities != ["CT"]:
        reasons.append(f"modality {'/'.join(modalities)} (expected CT)")
    sop_classes = sorted({h.sop_class_uid or "(none)" for h in headers})
    if any(s not in ELIGIBLE_SOP_CLASSES for s in sop_classes):
        reasons.append(
            f"SOP class {'/'.join(sop_classes)} (expected CT Image Storage {CT_IMAGE_STORAGE}, "
            "or (Legacy Converted) Enhanced CT Image Storage)"
        )
    if any(h.number_of_frames > 1 and h.frame_index is None for h in headers):
        reasons.append(
            "multi-frame files without per-frame functional groups (expected one slice per file, or Enhanced CT)"
        )
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
    kernel_value = first.acquisition.get("ConvolutionKernel")
    return Candidate(
        group=group,
        n_files=len(headers),
        n_positions=n_positions,
        step_mm=slice_step_estimate(headers),
        original_axial=all(h.is_original_axial for h in headers),
        coverage_mm=slice_extent_mm(headers),
        kernel=classify_kernel(kernel_value, first.acquisition.get("SeriesDescription")),
        prefer_index=preference_index(kernel_value, prefer_kernels),
        reasons=reasons,
        preferred=preference_index(kernel_value, prefer_kernels) < len(prefer_kernels),
    )


def rank(eligible: list[Candidate]) -> tuple[list[Candidate], dict[str, str], list[str]]:
    """Order eligible candidates by the module's rules.

    Returns:
        (candidates best first, {key: why it lost to the first}, keys that tied with the first on
        every criterion).
    """
    remaining = sorted(eligible, key=lambda c: c.key)
    ordered: list[Candidate] = []
    lost: dict[str, str] = {}
    tie: list[str] = []
    while remaining:
        pool, eliminated = _pick(remaining)
        best = pool[0]
        if not ordered:
            lost.update(eliminated)
            tie = [c.key for c in pool[1:]]
            for c in pool[1:]:
                lost[c.key] = (
                    "ties with the chosen series on every criterion; the series key sorts later "
                    "(use --series-uid to choose it)"
                )
        ordered.append(best)
        remaining = [c for c in remaining if c is not best]
    return ordered, lost, tie


def _pick(cands: list[Candidate]) -> tuple[list[Candidate], dict[str, str]]:
    """Filter by criteria (a)-(d); returns (the tied best, sorted by key; {key: why eliminated})."""
    why: dict[str, str] = {}
    pool = list(cands)

    def keep(survivors: list[Candidate], reason) -> None:
        nonlocal pool
        for c in pool:
            if c not in survivors:
                why[c.key] = "ranked below the chosen series: " + reason(c)
        pool = survivors

    if any(c.original_axial for c in pool):
        keep([c for c in pool if c.original_axial], lambda c: "its ImageType is not ORIGINAL/AXIAL")
    best_kernel = min(c.kernel_rank for c in pool)
    top = next(c for c in pool if c.kernel_rank == best_kernel)
    keep(
        [c for c in pool if c.kernel_rank == best_kernel],
        lambda c: f"its kernel ranks after the chosen one's: {_kernel_text(c)} vs {_kernel_text(top)}",
    )
    covered = [c for c in pool if c.coverage_mm is not None]
    if covered:
        widest = max(covered, key=lambda c: c.coverage_mm)  # type: ignore[arg-type, return-value]
        keep(
            [c for c in pool if _same_or_more_coverage(c, widest)],
            lambda c: f"less coverage along the slice normal ({_fmt_cov(c)} < {_fmt_cov(widest)})",
        )
    steps = [c.step_mm for c in pool if c.step_mm is not None]
    if steps:
        thinnest = min(steps)
        keep(
            [c for c in pool if c.step_mm is not None and c.step_mm <= thinnest + STEP_TIE_MM],
            lambda c: f"thicker slice spacing ({_fmt_step(c.step_mm)} > {_fmt_step(thinnest)})",
        )
    return sorted(pool, key=lambda c: c.key), why


def _same_or_more_coverage(c: Candidate, widest: Candidate) -> bool:
    if c.coverage_mm is None or widest.coverage_mm is None:
        return False
    tolerance = max(c.step_mm or 0.0, widest.step_mm or 0.0) + STEP_TIE_MM
    return c.coverage_mm >= widest.coverage_mm - tolerance


def select_series(
    groups: list[SeriesGroup],
    *,
    min_slices: int,
    series_uid: str | None = None,
    position_tolerance_mm: float = 0.05,
    prefer_kernels: tuple[str, ...] = (),
) -> Selection:
    """Apply the module's rules to the stacks of a study.

    Raises:
        DicomSeriesError: no stack is eligible, or ``series_uid`` is unknown or not eligible.
    """
    assessed = [
        assess(g, min_slices=min_slices, position_tolerance_mm=position_tolerance_mm, prefer_kernels=prefer_kernels)
        for g in groups
    ]
    eligible = [c for c in assessed if c.eligible]
    ordered, lost, tie = rank(eligible)
    candidates = ordered + sorted((c for c in assessed if not c.eligible), key=lambda c: c.key)
    listing = "; ".join(_describe(c) for c in candidates[:10]) + (" ..." if len(candidates) > 10 else "")
    if series_uid:
        matches = [c for c in candidates if c.key == series_uid] or [
            c for c in candidates if c.group.series == series_uid
        ]
        if not matches:
            raise DicomSeriesError(
                "the series asked for with --series-uid is not in the study",
                expected=f"one of: {', '.join(c.key for c in candidates)}",
                found=series_uid,
                fix="pass one of the series keys listed above",
            )
        usable = [c for c in matches if c.eligible]
        if not usable:
            raise DicomSeriesError(
                "the series asked for with --series-uid cannot be converted",
                expected="a volumetric CT series (single-frame or Enhanced CT)",
                found="; ".join(f"{c.key}: {'; '.join(c.reasons)}" for c in matches),
                fix="choose another series: " + listing,
            )
        chosen = usable[0]  # in rank order
        why = "chosen by hand (--series-uid)"
        rejected = [
            (c, c.reasons or ["not the series chosen with --series-uid"]) for c in candidates if c is not chosen
        ]
        tie = []
    else:
        if not eligible:
            raise DicomSeriesError(
                "no usable CT series in the study",
                expected="a CT Image Storage series (modality CT) with at least "
                f"{min_slices} slices at distinct positions",
                found=listing or "no series",
                fix="check that the folder holds the CT study (not only localizers, reports or other modalities)",
            )
        chosen = ordered[0]
        why = (
            f"ranked first of {len(eligible)} eligible CT series "
            f"({'ORIGINAL/AXIAL' if chosen.original_axial else 'not ORIGINAL/AXIAL'}, "
            f"kernel {_kernel_text(chosen)}, coverage {_fmt_cov(chosen)}, step {_fmt_step(chosen.step_mm)})"
        )
        if tie:
            why += (
                f"; TIED on every criterion with {', '.join(tie)}: decided by series key order "
                "(choose with --series-uid)"
            )
            log.warning(
                "series %s ties with %s on every ranking criterion; chose %s by key order "
                "(pass --series-uid to choose another)",
                chosen.key,
                ", ".join(tie),
                chosen.key,
            )
        rejected = [(c, c.reasons or [lost.get(c.key, "ranked below the chosen series")]) for c in candidates[1:]]
    alternatives = [c.key for c in ordered if c is not chosen]
    return Selection(chosen=chosen, why=why, rejected=rejected, eligible_alternatives=alternatives, tie=tie)


def _kernel_text(c: Candidate) -> str:
    name = c.kernel.kernel or "(none)"
    pref = " (in convert.prefer_kernels)" if c.preferred else ""
    return f"{name!r} [{c.kernel.label}{pref}]"


def _fmt_cov(c: Candidate) -> str:
    if c.coverage_mm is None:
        return "unknown"
    return f"{c.coverage_mm:.1f} mm over {c.n_positions} positions"


def _fmt_step(step: float | None) -> str:
    return "unknown" if step is None else f"{step:.3f} mm"


def _describe(c: Candidate) -> str:
    desc = c.group.first.acquisition.get("SeriesDescription") or ""
    state = "eligible" if c.eligible else "; ".join(c.reasons)
    return f"{c.key} [{c.group.first.modality or '?'} '{desc}', {c.n_files} files]: {state}"
