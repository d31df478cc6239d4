"""Preflight checks, one by one (the workflow runs them at parse time: tests/workflow/)."""

from __future__ import annotations

import json
import logging
import zipfile

import pytest

from ctsam.cohort import Sample
from ctsam.config import validate_config
from ctsam.preflight import (
    STAGE_PACKAGES,
    case_backend,
    check_inputs,
    check_packages,
    check_radiomics,
    check_refine,
    checkpoint_problem,
    drop_missing_auto_labels,
    is_dry_run,
    preflight,
)
from ctsam.progress import Progress


def test_auto_backend_per_case():
    assert case_backend("auto", "/x/labels.nii.gz") == "labels"
    assert case_backend("auto", None) == "totalsegmentator"
    assert case_backend("totalsegmentator", "/x/labels.nii.gz") == "totalsegmentator"
    assert case_backend("labels", None) == "labels"


def test_auto_forgets_label_files_a_study_folder_lacks(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    samples = [Sample("a", "s", str(tmp_path / "a.nii.gz")), Sample("b", "s", str(tmp_path / "b.nii.gz"))]
    kept = drop_missing_auto_labels(samples, "auto", from_studies_dir=True)
    assert [s.coarse_labels for s in kept] == [str(tmp_path / "a.nii.gz"), None]
    assert drop_missing_auto_labels(samples, "auto", from_studies_dir=False) == samples  # a sheet keeps its typo
    assert drop_missing_auto_labels(samples, "labels", from_studies_dir=True) == samples


def test_inputs_missing_empty_and_label_maps(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "1.dcm").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    samples = [
        Sample("ok", str(tmp_path / "full")),
        Sample("gone", str(tmp_path / "nope")),
        Sample("hollow", str(tmp_path / "empty")),
        Sample("lab", str(tmp_path / "full"), coarse_labels=str(tmp_path / "missing.nii.gz")),
    ]
    backends = {"ok": "totalsegmentator", "gone": "totalsegmentator", "hollow": "totalsegmentator", "lab": "labels"}
    problems = check_inputs(samples, backends, {"samples": "s.tsv"})
    text = "\n".join(p.render() for p in problems)
    assert "case gone: study or CT does not exist" in text
    assert "case hollow: study or CT folder is empty" in text
    assert "case lab: coarse label map does not exist" in text and "column coarse_labels" in text
    assert "case ok" not in text


def test_checkpoint_header_checks(tmp_path):
    from ctsam.model import build_model, save_model

    assert checkpoint_problem("builtin:demo_micro") is None
    assert "unknown built-in model" in checkpoint_problem("builtin:nope")
    assert "does not exist" in checkpoint_problem(str(tmp_path / "none.safetensors"))
    good = save_model(build_model("ctsam3d", "micro"), tmp_path / "m.safetensors", sidecar=False)
    assert checkpoint_problem(str(good)) is None
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    assert "truncated" in checkpoint_problem(str(tmp_path / "cut.safetensors"))
    (tmp_path / "junk.pth").write_bytes(b"hello world, not a model")
    assert "neither a ctsam .safetensors nor a torch params.pth" in checkpoint_problem(str(tmp_path / "junk.pth"))
    with zipfile.ZipFile(tmp_path / "z.pth", "w") as zf:
        zf.writestr("readme.txt", "x")
    assert "not a torch checkpoint" in checkpoint_problem(str(tmp_path / "z.pth"))


def test_demo_weights_only_on_the_demo_cohort():
    cfg = validate_config({})
    assert check_refine(cfg, demo=True) == []
    [problem] = check_refine(cfg, demo=False)
    assert problem.key == "refine.checkpoint" and "weights.allow_demo_weights: true" in problem.fix
    assert check_refine(validate_config({"weights": {"allow_demo_weights": True}}), demo=False) == []


def test_lesion_models_and_clicks_folder(tmp_path):
    from ctsam.preflight import check_lesions

    cfg = validate_config(
        {
            "lesions": {
                "checkpoint": str(tmp_path / "kits.pth"),
                "checkpoints": {"liver_tumor": "builtin:demo_lesion"},
                "clicks_dir": str(tmp_path / "clicks"),
            }
        }
    )
    text = "\n".join(p.render() for p in check_lesions(cfg, demo=False))
    assert "key: lesions.checkpoint" in text and "kits.pth: does not exist" in text
    assert "key: lesions.checkpoints.liver_tumor" in text
    assert "key: lesions.clicks_dir" in text


def test_jobs_python_must_have_the_packages(tmp_path):
    import os
    import sys

    from ctsam.preflight import check_job_python

    assert check_job_python(str(tmp_path)) != []  # no python at all on this PATH
    assert "no 'python' on PATH" in check_job_python(str(tmp_path))[0].what
    assert check_job_python(os.path.dirname(sys.executable)) == []  # the environment running this test
    import subprocess

    # a real interpreter without ctsam's packages: a fresh venv, as when .venv is not activated
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    [problem] = check_job_python(str(tmp_path / "bare" / "bin") + os.pathsep + str(tmp_path))
    assert "lacks ctsam's packages (ModuleNotFoundError: No module named 'numpy')" in problem.what
    assert "activate" in problem.fix and problem.key == "PATH"


def test_radiomics_params_file_must_exist(tmp_path):
    assert check_radiomics(validate_config({})) == []
    [problem] = check_radiomics(validate_config({"radiomics": {"params": str(tmp_path / "p.yaml")}}))
    assert problem.key == "radiomics.params" and "does not exist" in problem.what


def test_missing_package_names_stage_and_extra(monkeypatch):
    monkeypatch.setitem(STAGE_PACKAGES, "radiomics", (("ctsam_no_such_package_xyz", "radiomics"),))
    [problem] = check_packages(["convert", "radiomics"], [])
    assert "'ctsam_no_such_package_xyz'" in problem.what and "stage radiomics" in problem.what
    assert "pip install 'ctsam[radiomics]'" in problem.fix


def test_preflight_splits_blocking_and_per_case(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "no-weights"))
    cfg = validate_config({})
    samples = [Sample("a", str(tmp_path / "missing"))]
    result = preflight(cfg, samples, ["convert", "coarse", "seed", "refine"], demo=False)
    assert result.backends == {"a": "totalsegmentator"}
    keys = [p.key for p in result.blocking]
    assert "refine.checkpoint" in keys and any("weights_path" in k for k in keys)
    assert [p.cases for p in result.per_case] == [("a",)]
    text = str(result.error(include_cases=True))
    assert "case a: study or CT does not exist" in text and len(text.splitlines()) < 20


@pytest.mark.parametrize(
    ("argv", "dry"),
    [
        (["snakemake", "-n"], True),
        (["snakemake", "--dry-run"], True),
        (["snakemake", "-np"], True),
        (["snakemake", "--profile", "p"], False),
        (["snakemake", "-j", "4"], False),
        (["snakemake", "--notemp"], False),
    ],
)
def test_dry_run_detection(argv, dry):
    assert is_dry_run(argv) is dry


def test_progress_logs_at_most_every_interval(caplog):
    now = [0.0]
    p = Progress(100, "work", interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="ctsam.progress"):
        for _ in range(99):
            now[0] += 1.0  # 99 s for 99 steps
            p.update()
        assert p.lines_logged == 9  # one line per 10 s, not one per step
        now[0] += 1.0
        p.update()
    assert p.lines_logged == 10
    assert "work: 100/100 (100%)" in caplog.records[-1].getMessage()
    assert "s left" in caplog.records[0].getMessage()


def test_manifest_records_demo_weights_on_real_ct(tmp_path):
    from ctsam.manifest import DEMO_WEIGHTS_WARNING, build_manifest

    npz = tmp_path / "refined.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("meta.json", json.dumps({"meta": {"demo_weights_on_real_ct": True}}))
    assert build_manifest(case="c", outputs=[npz])["warnings"] == [DEMO_WEIGHTS_WARNING]
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("meta.json", json.dumps({"meta": {}}))
    assert "warnings" not in build_manifest(case="c", outputs=[npz])
