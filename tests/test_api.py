"""The Python API (ctsam/__init__.py, ctsam/api.py): cheap to import, listed by help(), one function per
stage, and ``run_case`` writes the workflow's per-case files byte for byte."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import ctsam
from ctsam import api
from ctsam.stages import CASE, STAGES, pipeline_stages, stage

REPO = Path(__file__).resolve().parents[1]
STAGE_ORDER = [s.name for s in pipeline_stages(CASE)]


def stage_file(name: str) -> str:
    return stage(name).done_file


def test_import_ctsam_is_cheap():
    code = (
        "import sys, ctsam; print(sorted(m for m in ('numpy', 'torch', 'SimpleITK', 'ctsam.api') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_the_api():
    doc = ctsam.__doc__ or ""
    for name in ctsam.__all__:
        assert getattr(ctsam, name) is not None
        if not name.startswith("_") and name not in ("CaseRun", "Refinement", "STAGES"):
            assert name in doc, f"{name} missing from the module docstring (help(ctsam))"
    assert "run_case" in dir(ctsam)
    with pytest.raises(AttributeError):
        _ = ctsam.no_such_function


def test_every_stage_has_its_api_function_and_run_case_step():
    for s in STAGES:
        assert s.function in ctsam.__all__ and callable(getattr(ctsam, s.function)), s.name
    assert set(api.CASE_STEPS) == {s.name for s in pipeline_stages(CASE)}


def test_stage_config_keeps_only_the_stage_sections():
    cfg = api.stage_config({"fuse": {"threshold": 0.7}, "seed": {"max_components": 3}}, "fuse")
    defaults = api.load_config(None)
    assert cfg["fuse"]["threshold"] == 0.7
    assert cfg["seed"] == defaults["seed"]  # another stage's setting does not reach fuse


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def case_files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of a case's results, without the workflow's own logs and benchmarks."""
    return {
        p.relative_to(folder).as_posix(): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] not in ("logs", "benchmarks")
    }


@pytest.mark.workflow
@pytest.mark.slow
def test_run_case_writes_the_workflow_files_byte_identical(tmp_path):
    import json

    from tests.workflow.test_workflow import snakemake

    workdir = tmp_path / "wf"
    proc = snakemake(
        workdir, "--profile", "workflow/profiles/local", "--cores", "2", config={"workflow": {"demo": {"cases": 1}}}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = case_files(workdir / "results" / "demo-001")
    assert {"labels.nii.gz", "labels.tsv", "qc.json", "refined.npz", "manifest.json"} <= set(expected)

    demo = workdir / "demo" / "demo-001"
    clicks = demo / "lesions.tsv"
    run = api.run_case(
        demo / "dicom",
        tmp_path / "api" / "demo-001",
        coarse_labels=demo / "coarse.nii.gz",
        config=REPO / "config.yaml",
        lesion_clicks=clicks if clicks.exists() else None,
    )
    assert run.case == "demo-001"
    assert [s for s in run.stages] == [
        s for s in STAGE_ORDER if (workdir / "results" / "demo-001" / stage_file(s)).exists() or s == "seed"
    ]
    got = case_files(run.out_dir)
    assert got["labels.nii.gz"] == expected["labels.nii.gz"]  # the label map first: the headline promise
    assert set(got) == set(expected)
    # every file byte for byte, except the manifest: the workflow's holds its jobs' timings (benchmarks/)
    assert {k: v for k, v in got.items() if k != "manifest.json"} == {
        k: v for k, v in expected.items() if k != "manifest.json"
    }
    mine, theirs = (
        json.loads((d / "manifest.json").read_text()) for d in (run.out_dir, workdir / "results" / "demo-001")
    )
    for key in ("case", "config_digest", "inputs", "outputs", "checkpoints", "software"):
        assert mine[key] == theirs[key], key
