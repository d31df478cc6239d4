"""Planted defects: extra demo cases whose coarse labels (or field of view) carry one known error.

With ``workflow.demo.defects: true`` (``ctsam demo-cohort --defects``) the demo cohort gains one case
per kind below, after the clean ones. Each is a phantom drawn like a clean case (from
``(seed, 100 + k)``), then spoiled in one way, as a segmenter or a scan would spoil it; its
``phantom.json`` records the truth under ``"defect"``: the kind, the structures a reviewer should
see flagged, and the QC flags that would say so. ``benchmarks/qc_flags.py`` runs the workflow on such
a cohort and scores the QC flags against this truth (precision / recall).

Kinds (``DEFECTS``):

* ``missing_organ``: the left kidney is absent from the coarse labels (flag ``missing``);
* ``swapped_side``: the coarse labels call the left kidney right and the right one left (``laterality``);
* ``truncated_fov``: the scan ends half-way up the liver (every slice above its centre is gone), so
  the liver and the organs cut with it touch the image border (``truncated``);
* ``leaking_mask``: the coarse spleen grows into the unlabelled tissue around it to 2.5 times its
  volume (``low_dice`` when the refinement is accepted, ``low_confidence`` when fusion keeps the
  leaking coarse mask, ``volume_change`` when the ratio leaves its bounds).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ctsam.demo.structures import ORGANS
from ctsam.volume import CTVolume, Geometry, LabelMap

DEFECTS: tuple[str, ...] = ("missing_organ", "swapped_side", "truncated_fov", "leaking_mask")
#: flags that count as finding each kind of defect (on one of its structures)
EXPECTED_FLAGS: dict[str, tuple[str, ...]] = {
    "missing_organ": ("missing", "lost"),
    "swapped_side": ("laterality",),
    "truncated_fov": ("truncated",),
    "leaking_mask": ("low_dice", "low_confidence", "volume_change", "high_hd95", "hu_implausible"),
}
LEAK_FACTOR = 2.5
# structures cut by the truncated field of view that count as truncated (the truth): those with at
# least this many voxels on the new border face, except structures that run through any scan's end
TRUNCATION_MIN_VOXELS = 20


def defect_case_ids() -> list[str]:
    """``demo-missing-organ``, ``demo-swapped-side``, ... (one per kind, in :data:`DEFECTS` order)."""
    return [f"demo-{kind.replace('_', '-')}" for kind in DEFECTS]


def defect_of(case_id: str) -> str | None:
    """The defect kind of a defect case id, else None."""
    ids = defect_case_ids()
    return DEFECTS[ids.index(case_id)] if case_id in ids else None


def defect_index(kind: str) -> int:
    """The phantom index of a defect case (its random draw is ``(seed, index)``): 101, 102, ..."""
    return 101 + DEFECTS.index(kind)


def plant(kind: str, phantom):
    """``(phantom with the defect, truth dict)`` for one kind (see the module doc)."""
    from ctsam.demo.phantom import Phantom

    coarse = phantom.coarse.array.copy()
    ct, truth = phantom.ct, phantom.truth
    if kind == "missing_organ":
        coarse[coarse == ORGANS["kidney_left"]] = 0
        structures = ["kidney_left"]
        text = "kidney_left removed from the coarse labels"
    elif kind == "swapped_side":
        left, right = coarse == ORGANS["kidney_left"], coarse == ORGANS["kidney_right"]
        coarse[left], coarse[right] = ORGANS["kidney_right"], ORGANS["kidney_left"]
        structures = ["kidney_left", "kidney_right"]
        text = "kidney_left and kidney_right swapped in the coarse labels"
    elif kind == "truncated_fov":
        zs = np.nonzero((truth.array == ORGANS["liver"]).any(axis=(1, 2)))[0]
        cut = int((zs.min() + zs.max()) // 2)  # keep slices [0, cut): the scan ends in the liver
        ct = CTVolume(np.ascontiguousarray(ct.array[:cut]), _crop_z(ct.geometry, cut))
        truth = LabelMap(np.ascontiguousarray(truth.array[:cut]), _crop_z(truth.geometry, cut), truth.labels)
        coarse = np.ascontiguousarray(coarse[:cut])
        structures = _cut_structures(coarse, truth.labels)
        text = f"field of view ends at slice {cut} of {phantom.ct.geometry.shape_zyx[0]}, half-way up the liver"
    elif kind == "leaking_mask":
        from scipy.ndimage import binary_dilation

        spleen = coarse == ORGANS["spleen"]
        target = LEAK_FACTOR * int(spleen.sum())
        grown = spleen
        while int(grown.sum()) < target:
            step = binary_dilation(grown) & ((coarse == 0) | grown)
            if int(step.sum()) == int(grown.sum()):
                break
            grown = step
        coarse[grown] = ORGANS["spleen"]
        structures = ["spleen"]
        text = f"spleen grows from {int(spleen.sum())} to {int(grown.sum())} voxels into unlabelled tissue"
    else:
        raise ValueError(f"unknown defect kind {kind!r} (known: {', '.join(DEFECTS)})")
    planted = Phantom(
        ct=ct,
        truth=truth,
        coarse=LabelMap(coarse, truth.geometry, phantom.coarse.labels),
        coarse_errors=[*phantom.coarse_errors, text],
        spec=replace(phantom.spec),
    )
    return planted, {
        "kind": kind,
        "structures": structures,
        "expected_flags": list(EXPECTED_FLAGS[kind]),
        "description": text,
    }


def _crop_z(g: Geometry, n: int) -> Geometry:
    return Geometry(
        shape_zyx=(n, *g.shape_zyx[1:]),
        spacing_xyz_mm=g.spacing_xyz_mm,
        origin_xyz_mm=g.origin_xyz_mm,
        direction=g.direction,
    )


def _cut_structures(coarse: np.ndarray, labels: dict[int, str]) -> list[str]:
    """Structures with at least TRUNCATION_MIN_VOXELS voxels on the new top face (tubes excepted)."""
    import fnmatch

    from ctsam.config import load_config

    through = load_config()["qc"]["through_structures"]

    def matches(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    values, counts = np.unique(coarse[-1], return_counts=True)
    names = [labels.get(int(v), f"label_{v}") for v, n in zip(values, counts) if v and n >= TRUNCATION_MIN_VOXELS]
    return sorted(n for n in names if not matches(n, through))
