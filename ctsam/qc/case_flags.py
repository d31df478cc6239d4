"""Case-level QC flags: findings about the label map as a whole (not one structure).

Kept apart from the per-structure flags (:mod:`ctsam.qc.flags`) so that their calibration can change
independently. An empty result is a finding, never a silent success:

* ``empty_labelmap`` -- the final label map labels no voxel, or less than ``qc.min_labelled_fraction``
  of the image (a segmenter that failed, a checkpoint that outputs nothing, a wrong label file).

Flags have the same shape as structure flags, plus ``"structure": null``.
"""

from __future__ import annotations

import numpy as np

from ctsam.volume import LabelMap


def empty_labelmap_flag(final: LabelMap, config: dict) -> dict | None:
    """The ``empty_labelmap`` flag when ``final`` labels (almost) nothing, else None."""
    total = int(final.array.size)
    labelled = int(np.count_nonzero(final.array))
    fraction = labelled / total if total else 0.0
    threshold = float(config.get("min_labelled_fraction", 0.001))
    if labelled and fraction >= threshold:
        return None
    what = (
        "the label map is empty"
        if not labelled
        else (f"the label map is nearly empty: {labelled} labelled voxels ({100 * fraction:.3g}% of the image)")
    )
    severity = (config.get("flag_severity") or {}).get("empty_labelmap", "error")
    return {"flag": "empty_labelmap", "severity": severity, "message": what, "value": fraction, "threshold": threshold}


def case_level_flags(final: LabelMap, config: dict) -> list[dict]:
    """Every case-level flag of ``final`` (each with ``"structure": None``)."""
    found = [empty_labelmap_flag(final, config)]
    return [f | {"structure": None} for f in found if f is not None]
