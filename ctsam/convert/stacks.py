"""Splitting series into stacks: slices that can form one volume.

A series UID may hold more than one stack: a localizer stored in the axial series, a reformat, or
frames of several stacks/time points of an Enhanced CT file. Slices belong to one stack when they
share the study, the series, the orientation (cosines within 0.01), rows x columns, pixel spacing
(to 1e-4 mm), ImageType values 1-3 (e.g. ORIGINAL\\PRIMARY\\AXIAL vs ORIGINAL\\PRIMARY\\LOCALIZER)
and, for frames, the StackID and temporal position. Every stack is a candidate of its own with its
own reasons; a series with one stack keeps its key, the stacks of a split series are keyed
``<series key>#1``, ``#2``, ... (largest stack first).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from ctsam.io.dicom import DicomHeader, SeriesGroup

log = logging.getLogger(__name__)

ORIENTATION_CLUSTER_TOLERANCE = 0.01


def split_stacks(groups: list[SeriesGroup]) -> list[SeriesGroup]:
    """Split every series into its stacks (see the module docstring); groups keep their input order."""
    out: list[SeriesGroup] = []
    for group in groups:
        parts = _stack_parts(group.headers)
        if len(parts) == 1:
            out.append(group)
            continue
        ordered = sorted(parts.items(), key=lambda kv: (-len(kv[1]), repr(kv[0])))
        described = []
        for i, (skey, headers) in enumerate(ordered, start=1):
            how = f"{group.grouped_by}; stack {i} of {len(ordered)}: {describe_stack_key(skey)}"
            out.append(SeriesGroup(f"{group.key}#{i}", how, sorted(headers, key=lambda h: h.rel), series_key=group.key))
            described.append(f"#{i}: {len(headers)} slices, {describe_stack_key(skey)}")
        log.info("series %s holds %d stacks: %s", group.key, len(ordered), "; ".join(described))
    return out


def _stack_parts(headers: list[DicomHeader]) -> dict[tuple, list[DicomHeader]]:
    orientations: list[np.ndarray] = []
    parts: dict[tuple, list[DicomHeader]] = defaultdict(list)
    for h in headers:
        if h.iop is None:
            orient = -1
        else:
            v = np.asarray(h.iop, dtype=float)
            orient = next(
                (i for i, o in enumerate(orientations) if np.max(np.abs(o - v)) <= ORIENTATION_CLUSTER_TOLERANCE), -2
            )
            if orient == -2:
                orientations.append(v)
                orient = len(orientations) - 1
        iop_key = None if orient == -1 else tuple(round(float(x), 3) + 0.0 for x in orientations[orient])
        spacing = None if h.pixel_spacing_mm is None else tuple(round(v, 4) for v in h.pixel_spacing_mm)
        key = (h.study_uid, iop_key, h.rows, h.columns, spacing, tuple(h.image_type[:3]), h.frame_stack)
        parts[key].append(h)
    return parts


def describe_stack_key(key: tuple) -> str:
    _, iop, rows, cols, spacing, image_type, frame_stack = key
    parts = [
        f"orientation {orientation_name(iop)}",
        f"{rows}x{cols}",
        "pixel spacing " + ("?" if spacing is None else "x".join(f"{v:g}" for v in spacing)) + " mm",
        "ImageType " + ("\\".join(image_type) or "(none)"),
    ]
    if frame_stack:
        parts.append(frame_stack)
    return ", ".join(parts)


def orientation_name(iop: tuple[float, ...] | None) -> str:
    """``axial``, ``coronal``, ``sagittal`` or ``oblique`` (from the slice normal), ``unknown`` without IOP."""
    if iop is None:
        return "unknown"
    n = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        return "unknown"
    n = np.abs(n / norm)
    axis = int(np.argmax(n))
    if n[axis] < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]
