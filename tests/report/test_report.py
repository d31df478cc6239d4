"""Cohort report: table (parquet + CSV), snapshots, flagged order, provenance, failures, offline HTML."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from ctsam.config import load_config
from ctsam.io.image import write_ct, write_labelmap
from ctsam.qc.case import compute_case_qc
from ctsam.report.build import build_report, read_failures
from ctsam.report.snapshots import lps_view, world_to_canonical_index
from ctsam.volume import CTVolume, Geometry, LabelMap

LABELS = {1: "kidney_left", 2: "kidney_right", 3: "liver"}


def make_case(root, name: str, *, swap: bool = False, manifest: bool = True):
    shape = (16, 24, 28)
    g = Geometry(shape, (1.5, 1.5, 2.5), (0.0, 0.0, 0.0))
    lab = np.zeros(shape, np.uint8)
    left, right = (slice(3, 9), slice(19, 25)) if swap else (slice(19, 25), slice(3, 9))
    lab[5:11, 8:16, left] = 1
    lab[5:11, 8:16, right] = 2
    lab[2:8, 2:7, 10:18] = 3
    ct = np.where(lab > 0, 40, -800).astype(np.int16)
    d = root / name
    d.mkdir(parents=True)
    ctv, lm = CTVolume(ct, g), LabelMap(lab, g, dict(LABELS))
    write_ct(d / "ct.nii.gz", ctv)
    write_labelmap(d / "labels.nii.gz", lm)
    doc = compute_case_qc(ctv, lm, lm, load_config()["qc"], case=name)
    doc["inputs"] = {"ct": "ct.nii.gz", "labels": "labels.nii.gz"}
    (d / "qc.json").write_text(json.dumps(doc))
    if manifest:
        m = {
            "config_digest": "abc",
            "ctsam_version": "0.1.0",
            "software": {"numpy": "2.4"},
            "checkpoints": [],
            "stages": {"fuse": {"benchmark": {"wall_s": 3.0, "max_rss_mb": 400.0}}},
        }
        (d / "manifest.json").write_text(json.dumps(m))
    return doc


def test_lps_view_and_focus_index_follow_world_axes():
    shape = (4, 5, 6)
    arr = np.arange(np.prod(shape)).reshape(shape)
    g = Geometry(shape, (1.0, 2.0, 3.0), (10.0, 20.0, 30.0), ((-1, 0, 0), (0, 0, 1), (0, -1, 0)))
    v = lps_view(arr, g)
    # every canonical voxel sits at a world position that grows with its canonical index
    world = {}
    for k in range(v.array.shape[0]):
        for j in range(v.array.shape[1]):
            for i in range(v.array.shape[2]):
                zyx = np.argwhere(arr == v.array[k, j, i])[0]
                world[(k, j, i)] = g.index_to_world(zyx[::-1])
    assert world[(1, 0, 0)][2] > world[(0, 0, 0)][2]  # canonical z -> superior
    assert world[(0, 1, 0)][1] > world[(0, 0, 0)][1]  # canonical y -> posterior
    assert world[(0, 0, 1)][0] > world[(0, 0, 0)][0]  # canonical x -> patient left
    assert v.spacing_zyx_mm == (2.0, 3.0, 1.0)
    assert world_to_canonical_index(world[(2, 1, 3)], g, v) == (2, 1, 3)


def test_report_end_to_end(tmp_path):
    results = tmp_path / "results"
    make_case(results, "c1")
    make_case(results, "c2", swap=True)
    make_case(results, "c3", manifest=False)
    (results / "c4").mkdir()
    (results / "c4" / "qc.json").write_text("{not json")
    failures = tmp_path / "failed.tsv"
    failures.write_text("case\tstage\tmessage\nc5\tconvert\tgantry tilt <14 deg>\n")
    out = tmp_path / "report.html"
    summary = build_report(results, out, failures=failures)
    assert summary["cases"] == 3 and summary["snapshots"] == 3 and summary["flagged"] == 1

    html = out.read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", html)  # nothing fetched from the network
    assert html.count("data:image/png;base64,") == 3
    flagged = html[html.index("id='flagged'") : html.index("id='cases'")]
    assert "c2" in flagged and "c1" not in flagged and "laterality" in flagged
    assert "gantry tilt &lt;14 deg&gt;" in html  # failure message shown, escaped
    assert "c4" in html and "Unreadable QC files" in html
    assert "2 of 3 cases have a" in html and "abc" in html

    df = pd.read_parquet(tmp_path / "report_qc.parquet")
    assert len(df) == 9 and set(df["case"]) == {"c1", "c2", "c3"}
    row = df[(df["case"] == "c2") & (df["structure"] == "kidney_left")].iloc[0]
    assert "laterality" in row["flags"] and row["severity"] == "error" and not row["laterality_ok"]
    assert row["dice"] == pytest.approx(1.0) and row["volume_ml"] == pytest.approx(6 * 8 * 6 * 1.5 * 1.5 * 2.5 / 1000)
    csv = pd.read_csv(tmp_path / "report_qc.csv")
    assert len(csv) == 9 and list(csv.columns) == list(df.columns)

    # deterministic: same inputs, same bytes
    first = out.read_bytes()
    build_report(results, out, failures=failures)
    assert out.read_bytes() == first


def test_snapshot_limit_and_missing_images(tmp_path):
    results = tmp_path / "results"
    make_case(results, "a", swap=True)
    make_case(results, "b")
    (results / "b" / "ct.nii.gz").unlink()
    out = tmp_path / "r.html"
    summary = build_report(results, out, max_snapshots=1)
    assert summary["snapshots"] == 1
    html = out.read_text()
    assert "limit reached" in html
    summary = build_report(results, out, max_snapshots=5)
    assert summary["snapshots"] == 1 and "CT not found" in out.read_text()


def test_read_failures_formats(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("# failed\ncase1\ncase2\tout of memory\n")
    assert read_failures(p) == [{"case": "case1", "message": ""}, {"case": "case2", "message": "out of memory"}]
    p.write_text("case,rule\nx,refine\n")
    assert read_failures(p) == [{"case": "x", "rule": "refine"}]


def test_cli_report(tmp_path):
    from ctsam.cli import main

    make_case(tmp_path / "results", "c1")
    assert (
        main(["report", str(tmp_path / "results"), "-o", str(tmp_path / "out" / "cohort.html"), "--max-snapshots", "0"])
        == 0
    )
    assert (tmp_path / "out" / "cohort_qc.parquet").exists() and (tmp_path / "out" / "cohort_qc.csv").exists()
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "x.html")]) == 2


def test_lesion_rows_and_flags_appear_in_the_case(tmp_path):
    from ctsam.qc.lesions import lesion_qc

    results = tmp_path / "results"
    make_case(results, "c1")
    shape, g = (16, 24, 28), Geometry((16, 24, 28), (1.5, 1.5, 2.5), (0.0, 0.0, 0.0))
    les = np.zeros(shape, np.uint8)
    les[3:6, 3:6, 12:15] = 1
    doc = json.loads((results / "c1" / "qc.json").read_text())
    side = {
        "lesions": [
            {
                "lesion_id": 1,
                "label": "liver_tumor",
                "touches_patch_border": True,
                "mean_probability": 0.9,
                "recist_long_axis_mm": 6.36,
                "recist_short_axis_mm": 4.5,
            }
        ]
    }
    lq = lesion_qc(CTVolume(np.zeros(shape, np.int16), g), LabelMap(les, g, {1: "lesion_1"}), None, side, {})
    doc["lesions"], doc["lesion_summary"] = lq["lesions"], lq["summary"]
    doc["inputs"]["lesions"] = "lesions.nii.gz"
    (results / "c1" / "qc.json").write_text(json.dumps(doc))
    out = tmp_path / "report.html"
    build_report(results, out)
    html = out.read_text()
    assert "lesions (1)" in html and "liver_tumor" in html and "6.4 / 4.5" in html
    assert "lesion_patch_border" in html  # the lesion's flag is listed with the case's flags
    assert "slices through the largest lesion" not in html  # no lesion map in the folder: no lesion snapshot
    write_labelmap(results / "c1" / "lesions.nii.gz", LabelMap(les, g, {1: "lesion_1"}))
    build_report(results, out)
    html = out.read_text()
    assert "c1: slices through the largest lesion" in html
    assert html.count("data:image/png;base64") == 2  # the case's snapshot and its lesion snapshot
