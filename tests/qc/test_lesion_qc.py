"""QC rows for lesions (``ctsam qc --lesions``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctsam.io.image import write_ct, write_labelmap
from ctsam.qc.lesions import lesion_qc
from ctsam.volume import CTVolume, Geometry, LabelMap

G = Geometry((20, 30, 30), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))


@pytest.fixture
def case(tmp_path):
    ct = np.full(G.shape_zyx, 50, np.int16)
    labels = np.zeros(G.shape_zyx, np.uint8)
    labels[2:18, 2:28, 2:28] = 3
    lesions = np.zeros(G.shape_zyx, np.uint8)
    lesions[5:9, 5:9, 5:9] = 2  # inside liver
    ct[5:9, 5:9, 5:9] = 10
    lesions[0:2, 0:2, 0:2] = 6  # outside every structure
    sidecar = {
        "format": "ctsam.lesions/1",
        "lesions": [
            {
                "lesion_id": 2,
                "name": "lesion_2",
                "label": "liver_tumor",
                "touches_patch_border": False,
                "mean_probability": 0.9,
                "max_probability": 0.99,
                "recist_long_axis_mm": 4.2,
                "recist_short_axis_mm": 4.2,
                "longest_diameter_3d_mm": 7.0,
                "click": {"inside_lesion": True},
            },
            {
                "lesion_id": 6,
                "name": "lesion_6",
                "label": None,
                "touches_patch_border": True,
                "mean_probability": 0.55,
                "click": {"inside_lesion": False},
            },
            {
                "lesion_id": 8,
                "name": "lesion_8",
                "label": None,
                "touches_patch_border": False,
                "mean_probability": None,
            },
        ],
    }
    paths = {"ct": tmp_path / "ct.nii.gz", "labels": tmp_path / "labels.nii.gz", "lesions": tmp_path / "lesions.nii.gz"}
    write_ct(paths["ct"], CTVolume(ct, G))
    write_labelmap(paths["labels"], LabelMap(labels, G, {3: "liver"}))
    write_labelmap(paths["lesions"], LabelMap(lesions, G, {2: "lesion_2", 6: "lesion_6", 8: "lesion_8"}))
    (tmp_path / "lesions.json").write_text(json.dumps(sidecar))
    return (
        paths,
        CTVolume(ct, G),
        LabelMap(lesions, G, {2: "lesion_2", 6: "lesion_6", 8: "lesion_8"}),
        LabelMap(labels, G, {3: "liver"}),
        sidecar,
    )


def test_lesion_rows_and_flags(case):
    _, ct, lesions, labels, sidecar = case
    out = lesion_qc(ct, lesions, labels, sidecar, {"min_mean_probability": 0.6})
    recs = {r["lesion_id"]: r for r in out["lesions"]}
    assert list(recs) == [2, 6, 8]
    r2 = recs[2]
    assert r2["voxels"] == 64 and r2["volume_ml"] == pytest.approx(64 * 2 / 1000)
    assert r2["hu"]["mean"] == 10.0 and r2["containing_structure"] == "liver" and r2["containing_fraction"] == 1.0
    assert r2["flags"] == [] and r2["recist_long_axis_mm"] == 4.2
    assert r2["centroid_lps_mm"] == pytest.approx([6.5, 6.5, 13.0])
    assert {f["flag"] for f in recs[6]["flags"]} == {
        "lesion_patch_border",
        "lesion_low_confidence",
        "lesion_click_outside",
        "lesion_outside_structures",
    }
    assert [f["flag"] for f in recs[8]["flags"]] == ["lesion_empty"] and recs[8]["voxels"] == 0
    assert out["summary"]["n_lesions"] == 3 and out["summary"]["flag_counts"]["lesion_empty"] == 1


def test_qc_command_adds_lesion_rows(case, tmp_path):
    from ctsam.cli import main

    paths, *_ = case
    out = tmp_path / "qc.json"
    assert main(["qc", str(paths["ct"]), str(paths["labels"]), "--lesions", str(paths["lesions"]), "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["lesion_id"] for r in doc["lesions"]] == [2, 6, 8]
    assert doc["lesion_summary"]["n_lesions"] == 3 and doc["inputs"]["lesions"] == "lesions.nii.gz"
    assert [s["name"] for s in doc["structures"]] == ["liver"]  # lesions are not anatomy rows
    out2 = tmp_path / "qc2.json"
    assert main(["qc", str(paths["ct"]), str(paths["labels"]), "-o", str(out2)]) == 0
    assert "lesions" not in json.loads(out2.read_text())
