"""A small results folder (QC of synthetic cases, with a flagged one and a failure list) for report tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctsam.config import load_config
from ctsam.io.image import write_ct, write_labelmap
from ctsam.qc.case import compute_case_qc
from ctsam.volume import CTVolume, Geometry, LabelMap

LABELS = {1: "kidney_left", 2: "kidney_right", 3: "liver", 4: "esophagus"}


def write_case(root, name: str, *, swap: bool = False, refined: bool = True) -> dict:
    """results/<name>/{ct,labels}.nii.gz + qc.json; ``swap`` puts the kidneys on the wrong sides."""
    shape = (16, 24, 28)
    g = Geometry(shape, (1.5, 1.5, 2.5), (0.0, 0.0, 0.0))
    lab = np.zeros(shape, np.uint8)
    left, right = (slice(3, 9), slice(19, 25)) if swap else (slice(19, 25), slice(3, 9))
    lab[5:11, 8:16, left] = 1
    lab[5:11, 8:16, right] = 2
    lab[2:8, 2:7, 10:18] = 3
    lab[3:14, 18:20, 13:15] = 4
    ct = np.where(lab > 0, 40, -800).astype(np.int16)
    d = root / name
    d.mkdir(parents=True)
    ctv, lm = CTVolume(ct, g), LabelMap(lab, g, dict(LABELS))
    write_ct(d / "ct.nii.gz", ctv)
    write_labelmap(d / "labels.nii.gz", lm)
    sources = {
        n: {"source": "refined" if refined and n != "esophagus" else "coarse", "reason": None} for n in LABELS.values()
    }
    doc = compute_case_qc(ctv, lm, lm, load_config()["qc"], case=name, fusion_sources=sources)
    doc["inputs"] = {"ct": "ct.nii.gz", "labels": "labels.nii.gz"}
    (d / "qc.json").write_text(json.dumps(doc))
    return doc


@pytest.fixture
def results_with_failure(tmp_path):
    """results/ with case-a (clean), case-b (kidneys swapped) and case-c failed in convert."""
    results = tmp_path / "results"
    write_case(results, "case-a")
    write_case(results, "case-b", swap=True)
    (results / "cohort").mkdir()
    (results / "cohort" / "failures.tsv").write_text(
        "case\tstage\treason\ncase-c\tconvert\tDICOM series has a gap: 2 slices missing | fix: re-export the series\n"
        "case-a\tqc\tstale entry of an earlier run\n"
    )
    return results
