"""Relabelling a label map from its own names onto ctsam's coarse id space.

Both backends go through here: TotalSegmentator's header names (so a TotalSegmentator version that
renames or renumbers classes is caught by name, not trusted by id) and user label maps with any
naming (exact, case/separator variants, TotalSegmentator v1 names, aliases).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ctsam import labels

log = logging.getLogger(__name__)

#: First id given to unknown names kept with ``unknown: keep`` (after the 127 catalogue ids).
FIRST_EXTRA_ID = 128


@dataclass
class Relabelled:
    """Result of :func:`relabel`.

    Attributes:
        array: (z, y, x) label array in the coarse id space (uint8, or uint16 above 255).
        labels: ``{coarse_id: name}`` of every class mapped (present or not).
        matches: ``{source name: (catalogue name or None, how)}``.
        unknown: source names that are not in the catalogue.
        merged: catalogue name -> source names, where several source labels fell on one class.
        dropped_voxels: voxels set to background because their label was unknown and dropped.
    """

    array: np.ndarray
    labels: dict[int, str]
    matches: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    merged: dict[str, list[str]] = field(default_factory=dict)
    dropped_voxels: int = 0


def relabel(array: np.ndarray, source_labels: dict[int, str], *, unknown: str = "drop") -> Relabelled:
    """Map ``array`` (values = ``source_labels`` keys) onto coarse ids by name.

    Args:
        array: (z, y, x) integer label array.
        source_labels: ``{value: name}``; values in ``array`` without a name count as unknown
            names ``label_<value>``.
        unknown: ``drop`` (set to background) or ``keep`` (ids 128+, in name order).
    """
    if unknown not in ("drop", "keep"):
        raise ValueError(f"unknown must be 'drop' or 'keep', got {unknown!r}")
    values = [int(v) for v in np.unique(array) if v != 0]
    table = dict(source_labels)
    for v in values:
        table.setdefault(v, f"label_{v}")

    target: dict[int, int] = {}
    out_labels: dict[int, str] = {}
    matches: dict[str, tuple[str | None, str]] = {}
    sources_of: dict[str, list[str]] = {}
    unknown_names: list[str] = []
    for value in sorted(table):
        if value == 0:
            continue
        raw = table[value]
        m = labels.match_name(raw)
        matches[raw] = (m.name, m.how)
        if m.known:
            cid = labels.coarse_id(m.name)
            target[value] = cid
            out_labels[cid] = m.name
            sources_of.setdefault(m.name, []).append(raw)
        elif raw not in unknown_names:
            unknown_names.append(raw)

    extra_ids: dict[str, int] = {}
    if unknown == "keep":
        for offset, raw in enumerate(sorted(unknown_names)):
            extra_ids[raw] = FIRST_EXTRA_ID + offset
        for value, raw in table.items():
            if value != 0 and raw in extra_ids:
                target[value] = extra_ids[raw]
                out_labels[extra_ids[raw]] = raw

    max_src = max([0, *values, *table])
    lut_dtype = np.uint16 if max(list(target.values()) + [0]) > 255 else np.uint8
    lut = np.zeros(max_src + 1, dtype=lut_dtype)
    for value, cid in target.items():
        lut[value] = cid
    out = lut[array]
    dropped = 0
    if unknown == "drop" and unknown_names:
        unknown_values = [v for v in values if v not in target]
        if unknown_values:
            dropped = int(np.isin(array, unknown_values).sum())
    merged = {name: srcs for name, srcs in sources_of.items() if len(srcs) > 1}
    for name, srcs in merged.items():
        log.warning("labels %s all map to '%s' and were merged", ", ".join(repr(s) for s in srcs), name)
    if unknown_names:
        log.warning(
            "%d label name(s) not in the catalogue (%s): %s",
            len(unknown_names),
            "kept as ids 128+" if unknown == "keep" else f"dropped, {dropped} voxels set to background",
            ", ".join(unknown_names),
        )
    return Relabelled(
        array=out,
        labels=dict(sorted(out_labels.items())),
        matches=matches,
        unknown=unknown_names,
        merged=merged,
        dropped_voxels=dropped,
    )


def class_summary(array: np.ndarray, table: dict[int, str], voxel_volume_ml: float) -> dict[str, dict]:
    """``{name: {"id", "voxels", "volume_ml"}}`` for classes of ``table`` present in ``array``."""
    counts = np.bincount(array.ravel(), minlength=max([0, *table]) + 1)
    out = {}
    for index in sorted(table):
        n = int(counts[index]) if index < counts.size else 0
        if n:
            out[table[index]] = {"id": index, "voxels": n, "volume_ml": round(n * voxel_volume_ml, 3)}
    return out
