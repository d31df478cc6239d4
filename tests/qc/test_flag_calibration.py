"""QC flag rules calibrated on the demo: what a clean scan shows is not flagged, each planted kind of
defect is (missing paired organ, tubes through the scan's ends, thin bones by p95, thin structures'
Dice, small fragments)."""

from __future__ import annotations

import numpy as np

from ctsam.config import load_config
from ctsam.qc.case import compute_case_qc
from ctsam.volume import CTVolume, Geometry, LabelMap

G = Geometry((20, 30, 40), (1.0, 1.0, 2.0), (-20.0, -15.0, 0.0))  # x runs to the patient's left
NAMES = {
    1: "kidney_right",
    2: "kidney_left",
    3: "trachea",
    4: "rib_left_3",
    5: "vertebrae_L1",
    6: "esophagus",
    7: "rib_right_3",
}


def qc(lab: np.ndarray, ct: np.ndarray | None = None, coarse: np.ndarray | None = None, **over) -> dict:
    cfg = dict(load_config()["qc"])
    cfg.update(over)
    if ct is None:
        ct = np.where(lab > 0, 40, -100).astype(np.int16)
        ct[np.isin(lab, (4, 5, 7))] = 500  # bone
        ct[lab == 3] = -900  # airway
    final = LabelMap(lab, G, dict(NAMES))
    ref = LabelMap(coarse if coarse is not None else lab, G, dict(NAMES))
    doc = compute_case_qc(CTVolume(ct, G), final, ref, cfg, case="t")
    return {s["name"]: [f["flag"] for f in s["flags"]] for s in doc["structures"]}


def body() -> np.ndarray:
    lab = np.zeros(G.shape_zyx, np.uint8)
    lab[8:14, 10:20, 2:12] = 1  # kidney_right (patient right = low x)
    lab[8:14, 10:20, 28:38] = 2  # kidney_left
    lab[4:16, 20:26, 18:22] = 5  # vertebra on the midline
    return lab


def test_missing_paired_organ_is_flagged_once():
    lab = body()
    assert "kidney_left" in qc(lab) and not any(qc(lab).values())
    lab[lab == 2] = 0
    flags = qc(lab)
    assert flags["kidney_left"] == ["missing"] and flags["kidney_right"] == []
    both = body()
    both[(both == 1) | (both == 2)] = 0
    assert "kidney_left" not in qc(both) and "kidney_right" not in qc(both)  # neither side: nothing to compare


def test_missing_partner_needs_a_real_present_side_and_a_paired_kind():
    lab = body()
    lab[lab == 2] = 0
    assert "kidney_left" not in qc(lab, missing_partner_min_ml=10.0)  # kidney_right holds 1.2 ml here
    lab = body()
    lab[2:4, 5:8, 30:33] = 4  # a rib on one side only: ribs are not in paired_structures
    assert "rib_right_3" not in qc(lab)


def test_tubes_run_through_the_scan_ends_but_not_out_of_the_side():
    lab = body()
    lab[10:20, 3:9, 17:23] = 3  # trachea leaves through the top slice (z_max)
    assert qc(lab)["trachea"] == []
    assert "truncated" in qc(lab, through_structures=[])["trachea"]
    lab[10:20, 3:9, 0:4] = 3  # ... and through the patient's right side of the image: that is truncation
    assert "truncated" in qc(lab)["trachea"]


def test_bone_is_judged_by_its_p95():
    lab = body()
    ct = np.where(lab > 0, 40, -100).astype(np.int16)
    ct[lab == 5] = 30  # soft-tissue HU
    ct[8:10, 22:24, 19:21] = 700  # a cortical rim: 8 voxels of 720 -> mean ~38 HU, p95 still soft tissue
    assert "hu_implausible" in qc(lab, ct)["vertebrae_L1"]
    ct[(lab == 5) & (np.arange(40)[None, None, :] % 2 == 0)] = 600  # half the voxels bone: p95 600 HU
    assert qc(lab, ct)["vertebrae_L1"] == []  # mean ~315, but a coarse thin bone's mean can be 20 HU too


def test_thin_structure_dice_needs_boundary_disagreement():
    lab = body()
    coarse = lab.copy()
    lab[3:17, 5:7, 19:21] = 6  # esophagus 2 x 2 voxels
    coarse[3:17, 6:8, 19:21] = 6  # shifted by one voxel: Dice 0.5, boundaries within 2 mm
    assert qc(lab, coarse=coarse)["esophagus"] == []
    assert "low_dice" in qc(lab, coarse=coarse, min_nsd=1.01)["esophagus"]
    coarse = lab.copy()
    coarse[lab == 1] = 0
    coarse[2:18, 2:28, 1:14] = 1  # a leaking coarse kidney: far boundaries
    assert "low_dice" in qc(lab, coarse=coarse)["kidney_right"]


def test_solid_organ_leaking_into_fat_is_flagged_by_its_p5():
    lab = body()
    ct = np.where(lab > 0, 40, -100).astype(np.int16)
    ct[lab == 5] = 500
    assert qc(lab, ct)["kidney_right"] == []
    lab[6:16, 8:22, 1:14][lab[6:16, 8:22, 1:14] == 0] = 1  # the kidney mask grows into the fat around it
    flags = qc(lab, ct)["kidney_right"]
    assert flags == ["hu_implausible"]  # mean still soft tissue (about -30 HU), p5 at fat (-100 HU)
