"""Cohort bookkeeping: sample sheets, case ids, enabled stages, status and failure reasons."""

from __future__ import annotations

import pytest

from ctsam.cohort import (
    Sample,
    case_file,
    case_status,
    load_samples,
    load_samples_tsv,
    log_file,
    reason_from_log,
    resolve_stages,
    scan_studies_dir,
    write_stage_config,
    write_status_tables,
)
from ctsam.errors import ConfigError

ALL = {"convert", "coarse", "seed", "refine", "fuse", "qc", "radiomics", "report", "radiomics-cohort"}


def test_samples_tsv_relative_paths_and_sanitised_ids(tmp_path):
    sheet = tmp_path / "sheets" / "samples.tsv"
    sheet.parent.mkdir()
    sheet.write_text(
        "case_id\tpath\tcoarse_labels\n# a comment\nA 01/../x\tstudies/a\tlabels/a.nii.gz\nB\t/abs/b.nii.gz\t\n"
    )
    samples = load_samples_tsv(sheet)
    assert samples[0].case_id.startswith("A_01___x-") and samples[1].case_id == "B"
    assert [s.input_id for s in samples] == ["A 01/../x", "B"]
    assert samples[0].path == str(sheet.parent / "studies/a")
    assert samples[0].coarse_labels == str(sheet.parent / "labels/a.nii.gz")
    assert samples[1].coarse_labels is None and not samples[1].is_dicom and samples[0].is_dicom
    assert all("/" not in s.case_id and ".." not in s.case_id for s in samples)


@pytest.mark.parametrize(
    "text, match",
    [
        ("id\tfile\nA\tx\n", "lacks required columns"),
        ("case_id\tpath\nA\tx\na\tx\nA\ty\n", "duplicate case id"),
        ("case_id\tpath\nA\t\n", "no path"),
    ],
)
def test_samples_tsv_errors(tmp_path, text, match):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_samples_tsv(sheet)


def test_studies_dir_pseudonymous_ids(tmp_path):
    for name in ("DOE^JOHN", "SMITH^JANE", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("x")
    samples = scan_studies_dir(tmp_path)
    assert len(samples) == 2
    assert all(s.case_id.startswith("case-") and "DOE" not in s.case_id for s in samples)
    assert scan_studies_dir(tmp_path) == samples  # stable
    assert scan_studies_dir(tmp_path, salt="s")[0].case_id != samples[0].case_id
    folder = scan_studies_dir(tmp_path, case_ids="folder", coarse_labels_file="seg.nii.gz")
    assert [s.case_id.rsplit("-", 1)[0] for s in folder] == ["DOE_JOHN", "SMITH_JANE"]
    assert folder[0].coarse_labels == str(tmp_path / "DOE^JOHN" / "seg.nii.gz")
    with pytest.raises(ConfigError, match="no study folders"):
        scan_studies_dir(tmp_path / "DOE^JOHN")


def test_load_samples_precedence(tmp_path):
    demo = load_samples({"samples": None, "studies_dir": None, "demo": {"dir": "d", "cases": 2}})
    assert [s.case_id for s in demo] == ["demo-001", "demo-002"]
    assert demo[0].path == "d/demo-001/dicom" and demo[0].coarse_labels == "d/demo-001/coarse.nii.gz"
    (tmp_path / "s1").mkdir()
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("case_id\tpath\nX\ts1\n")
    assert [s.case_id for s in load_samples({"samples": str(sheet), "studies_dir": str(tmp_path)})] == ["X"]
    assert load_samples({"samples": None, "studies_dir": str(tmp_path)})[0].case_id.startswith("case-")


def test_resolve_stages_auto_follows_available_commands():
    assert resolve_stages("auto", ALL) == [
        "convert",
        "coarse",
        "seed",
        "refine",
        "fuse",
        "qc",
        "radiomics",
        "report",
        "radiomics_cohort",
    ]
    assert resolve_stages("auto", {"convert", "coarse", "seed", "qc"}) == ["convert", "coarse", "seed"]
    # fuse works without refine (coarse masks only)
    assert resolve_stages("auto", {"convert", "coarse", "fuse", "qc"}) == ["convert", "coarse", "fuse", "qc"]
    assert resolve_stages("auto", set()) == []


def test_resolve_stages_explicit():
    assert resolve_stages(["coarse", "convert"], ALL) == ["convert", "coarse"]
    with pytest.raises(ConfigError, match="needs stages that are not enabled"):
        resolve_stages(["convert", "seed"], ALL)
    with pytest.raises(ConfigError, match="not available"):
        resolve_stages(["convert"], {"coarse"})
    with pytest.raises(ConfigError, match="unknown workflow stage"):
        resolve_stages(["convert", "segment"], ALL)


CTSAM_ERROR_LOG = """\
12:00:01 INFO    [demo-003] ctsam.convert: reading /data/DOE^JOHN/study
12:00:02 ERROR   [demo-003] ctsam: DICOM series has missing slices [case demo-003; /data/DOE^JOHN/study]
  expected: uniform slice positions every 2.5 mm
  found:    2 positions missing: -150.0, -147.5
  fix:      re-export the complete series
"""


def test_reason_from_log_is_one_line_and_redacted(tmp_path):
    log = tmp_path / "convert.log"
    log.write_text(CTSAM_ERROR_LOG)
    reason = reason_from_log(log, redact=("/data/DOE^JOHN/study",))
    assert "\n" not in reason and "DOE" not in reason
    assert reason.startswith("DICOM series has missing slices [case demo-003; <input>]")
    assert "found: 2 positions missing" in reason and "fix: re-export" in reason
    log.write_text("Traceback...\nValueError: boom\n")
    assert reason_from_log(log) == "ValueError: boom"
    log.write_text("")
    assert "without a message" in reason_from_log(log)
    assert reason_from_log(tmp_path / "nope.log") == "no log"


def _touch(path):
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("x")


def test_case_status(tmp_path):
    res = str(tmp_path)
    stages = ["convert", "coarse", "seed", "refine"]
    s = Sample("c1", "/in/c1")
    assert case_status(res, s, stages).status == "incomplete"
    _touch(case_file(res, "convert", "c1"))
    _touch(log_file(res, "coarse", "c1"))
    st = case_status(res, s, stages)
    assert (st.status, st.stages_done, st.failed_stage) == ("failed", ("convert",), "coarse")
    # seed's prompts are temporary: a later stage's output proves the earlier ones ran
    _touch(case_file(res, "coarse", "c1"))
    _touch(case_file(res, "refine", "c1"))
    st = case_status(res, s, stages)
    assert st.status == "ok" and st.stages_done == tuple(stages)


def test_write_status_tables_lists_failures_and_is_idempotent(tmp_path):
    res = str(tmp_path)
    samples = [Sample("a", "/in/a"), Sample("b", "/in/b")]
    _touch(case_file(res, "convert", "a"))
    log = tmp_path / "b" / "logs" / "convert.log"
    log.parent.mkdir(parents=True)
    log.write_text(CTSAM_ERROR_LOG)
    write_status_tables(res, samples, ["convert"])
    failures = (tmp_path / "cohort" / "failures.tsv").read_text().splitlines()
    assert failures[0] == "case\tstage\treason"
    assert len(failures) == 2 and failures[1].startswith("b\tconvert\tDICOM series has missing slices")
    status = (tmp_path / "cohort" / "status.tsv").read_text().splitlines()
    assert status[1].startswith("a\tok\tconvert") and status[2].startswith("b\tfailed")
    mtime = (tmp_path / "cohort" / "status.tsv").stat().st_mtime_ns
    write_status_tables(res, samples, ["convert"])
    assert (tmp_path / "cohort" / "status.tsv").stat().st_mtime_ns == mtime


def test_stage_config_is_content_addressed(tmp_path):
    cfg = {"convert": {"tilt": "error"}, "qc": {"x": 1}, "workflow": {"results_dir": "r"}}
    a = write_stage_config(cfg, "convert", tmp_path)
    assert write_stage_config({**cfg, "qc": {"x": 2}}, "convert", tmp_path) == a  # other sections: same file
    b = write_stage_config({**cfg, "convert": {"tilt": "resample"}}, "convert", tmp_path)
    assert a != b
    from ctsam.config import load_config

    assert load_config(b)["convert"]["tilt"] == "resample"


def test_cli_cohort_status(tmp_path):
    from ctsam.cli import main

    _touch(case_file(str(tmp_path), "convert", "x1"))
    assert main(["cohort-status", str(tmp_path), "--all-cases", "--stages", "convert,coarse"]) == 0
    rows = (tmp_path / "cohort" / "status.tsv").read_text().splitlines()
    assert rows[1].split("\t")[:4] == ["x1", "incomplete", "convert", "coarse"]


def test_import_ct_writes_int16_and_sidecar_without_path(tmp_path):
    import json

    import numpy as np

    from ctsam.cli import main
    from ctsam.io.image import read_ct, write_ct
    from ctsam.volume import CTVolume, Geometry

    g = Geometry(shape_zyx=(3, 4, 5), spacing_xyz_mm=(0.8, 0.8, 2.0), origin_xyz_mm=(1, 2, 3))
    src = tmp_path / "DOE_JOHN.nii.gz"
    write_ct(src, CTVolume(array=np.linspace(-1000, 500, 60).reshape(3, 4, 5).astype(np.float32), geometry=g))
    assert main(["import-ct", str(src), "-o", str(tmp_path / "ct.nii.gz")]) == 0
    ct = read_ct(tmp_path / "ct.nii.gz")
    assert ct.array.dtype == np.int16 and ct.geometry.same_space(g) and ct.array.min() == -1000
    side = (tmp_path / "ct.json").read_text()
    assert "DOE" not in side and json.loads(side)["source"]["dtype"] == "float32"
    write_ct(src, CTVolume(array=np.full((3, 4, 5), 60000.0, dtype=np.float32), geometry=g))
    assert main(["import-ct", str(src), "-o", str(tmp_path / "ct2.nii.gz")]) == 2


def test_lesion_stage_is_optional_and_auto_means_the_demo_only():
    from ctsam.cohort import lesions_active

    assert "lesions" in resolve_stages("auto", ALL | {"lesions"})
    assert resolve_stages(["convert", "coarse", "lesions"], ALL | {"lesions"}) == ["convert", "coarse", "lesions"]
    assert lesions_active("auto", "auto", demo=True) and not lesions_active("auto", "auto", demo=False)
    assert lesions_active("auto", True, demo=False) and not lesions_active("auto", False, demo=True)
    assert lesions_active(["convert", "coarse", "lesions"], "auto", demo=False)


def test_lesion_clicks_from_the_sheet_column_or_a_folder(tmp_path):
    from ctsam.cohort import lesion_clicks_for

    (tmp_path / "clicks").mkdir()
    (tmp_path / "clicks" / "B.tsv").write_text("lesion_id\tx\ty\tz\n1\t0\t0\t0\n")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("case_id\tpath\ttumour_clicks\nA\ta.nii.gz\tA_clicks.tsv\nB\tb.nii.gz\t\nC\tc.nii.gz\t\n")
    a, b, c = load_samples({"samples": str(sheet)}, clicks_column="tumour_clicks")
    assert a.lesion_clicks == str(tmp_path / "A_clicks.tsv") and b.lesion_clicks is None
    folder = str(tmp_path / "clicks")
    assert lesion_clicks_for(a, folder) == a.lesion_clicks
    assert lesion_clicks_for(b, folder) == str(tmp_path / "clicks" / "B.tsv")
    assert lesion_clicks_for(c, folder) is None and lesion_clicks_for(c, None) is None
    demo = load_samples({"demo": {"dir": "d", "cases": 1}})
    assert demo[0].lesion_clicks == "d/demo-001/lesions.tsv"


def test_active_stages_drop_the_lesion_stage_unless_enabled(tmp_path):
    from ctsam.cohort import active_stages

    avail = ALL | {"lesions"}
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    on = {"enabled": "auto", "checkpoint": str(model)}
    assert "lesions" in active_stages("auto", avail, on, demo=True)
    assert "lesions" not in active_stages("auto", avail, on, demo=False)
    # auto on the demo needs its model shipped; enabled: true does not look (a missing model fails loudly later)
    missing = {"enabled": "auto", "checkpoint": "builtin:no_such_model"}
    assert "lesions" not in active_stages("auto", avail, missing, demo=True)
    assert "lesions" not in active_stages("auto", avail, {"enabled": "auto", "checkpoint": None}, demo=True)
    assert "lesions" in active_stages("auto", avail, {**missing, "enabled": True}, demo=False)
    assert "lesions" not in active_stages("auto", avail, {**on, "enabled": False}, demo=True)
