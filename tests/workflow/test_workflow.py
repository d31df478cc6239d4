"""The Snakemake workflow, run as users run it (subprocess `snakemake` from the repository root).

Static checks (lint, dry-runs of both profiles) are fast. The demo-cohort runs are marked
``workflow`` + ``slow``: a 2-case local run, re-run (nothing to do), deleting one case (only that
case re-runs), a corrupt case (the others finish, the failure list names it). The real-SLURM run
lives in tests/workflow/test_workflow_slurm.py.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctsam.cohort import STAGE_FILES, active_stages, available_commands
from ctsam.config import load_config

REPO = Path(__file__).resolve().parents[2]
# the stages the demo run executes (the lesion stage: when builtin:demo_lesion is shipped)
STAGES = active_stages("auto", available_commands(), load_config(None)["lesions"], demo=True)
CASE_STAGES = [s for s in STAGES if s in STAGE_FILES and s != "seed"]  # seed's prompts are temporary


def snakemake(workdir: Path, *args: str, config: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python -m snakemake`` from the repo root with ``--directory workdir`` and a test config."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "test-config.yaml"
    import yaml

    configfile.write_text(yaml.safe_dump(config or {"workflow": {"demo": {"cases": 2}}}))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir), "--configfile", str(configfile), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def read_tsv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def jobs_by_case(dry_run_text: str) -> dict[str, set[str]]:
    """{case: rules} of the jobs listed by a dry-run (jobs without a case wildcard under '-')."""
    out: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", dry_run_text):
        m = re.match(r"\s*(?:local)?rule (\w+):", block)
        if not m:
            continue
        c = re.search(r"wildcards: .*?\bcase=([^,\s]+)", block)
        out.setdefault(c.group(1) if c else "-", set()).add(m.group(1))
    return out


# ------------------------------------------------------------------------------------------ static
@pytest.mark.workflow
def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


def fake_slurm_bin(folder: Path) -> Path:
    """SLURM's commands as tiny scripts answering like a one-partition cluster with a GPU (for dry runs:
    the SLURM preflight needs sbatch/sinfo; nothing is submitted in -n). The real cluster run is
    tests/test_workflow_slurm.py."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("sbatch", "squeue", "scancel"):
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
    (folder / "sinfo").write_text("#!/bin/sh\necho 'debug*|gpu:1'\n")
    for p in folder.iterdir():
        p.chmod(0o755)
    return folder


@pytest.mark.workflow
@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_dry_run_with_each_profile(tmp_path, profile, monkeypatch):
    """The SLURM profile dry-runs once SLURM's commands answer and its placeholder partition is replaced."""
    args = ["-n", "--profile", f"workflow/profiles/{profile}"]
    if profile == "slurm":
        monkeypatch.setenv("PATH", f"{fake_slurm_bin(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
        args += ["--default-resources", "slurm_partition=debug", "mem_mb=4000", "runtime=30"]
    proc = snakemake(tmp_path, *args, config={"workflow": {"demo": {"cases": 3}}})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = jobs_by_case(proc.stdout + proc.stderr)
    assert {"demo-001", "demo-002", "demo-003"} <= set(jobs)
    for case in ("demo-001", "demo-002", "demo-003"):
        assert {"demo_case", *CASE_STAGES} <= jobs[case]


@pytest.mark.workflow
def test_missing_study_does_not_break_the_dag(tmp_path):
    """A sample whose study folder is missing fails alone at run time (the DAG still builds, with a
    warning naming the case); a dry run reports it (tests/workflow/test_workflow_preflight.py)."""
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "IM1.dcm").write_bytes(b"x")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("case_id\tpath\nok1\ts1\ngone\tno/such/folder\n")
    proc = snakemake(
        tmp_path / "run",
        "--dag",
        "--profile",
        "workflow/profiles/local",
        config={
            "workflow": {"samples": str(sheet)},
            "coarse": {"backend": "labels"},
            "weights": {"allow_demo_weights": True},
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "case gone: study or CT does not exist" in proc.stderr


# ------------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf-local")
    proc = snakemake(workdir, "--profile", "workflow/profiles/local", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return workdir


@pytest.mark.workflow
@pytest.mark.slow
def test_demo_run_produces_every_enabled_stage_and_a_cohort_table(local_run):
    for case in ("demo-001", "demo-002"):
        assert (local_run / "demo" / case / "dicom").is_dir()
        for stage in CASE_STAGES:
            assert (local_run / "results" / case / STAGE_FILES[stage]).exists(), (case, stage)
            assert (local_run / "results" / case / "logs" / f"{stage}.log").exists()
            assert (local_run / "results" / case / "benchmarks" / f"{stage}.tsv").exists()
    status = read_tsv(local_run / "results" / "cohort" / "status.tsv")
    assert [(r["case"], r["status"]) for r in status] == [("demo-001", "ok"), ("demo-002", "ok")]
    assert read_tsv(local_run / "results" / "cohort" / "failures.tsv") == []
    if "report" in STAGES:
        assert (local_run / "results" / "cohort" / "report.html").exists()


@pytest.mark.workflow
@pytest.mark.slow
def test_rerun_does_nothing(local_run):
    proc = snakemake(local_run, "--profile", "workflow/profiles/local", "--cores", "2")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.workflow
@pytest.mark.slow
def test_deleting_one_case_reruns_only_that_case(local_run, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(local_run, work, symlinks=True)
    shutil.rmtree(work / "results" / "demo-002")
    shutil.rmtree(work / "demo" / "demo-002")
    proc = snakemake(work, "-n", "--profile", "workflow/profiles/local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = jobs_by_case(proc.stdout + proc.stderr)
    assert "demo-001" not in jobs
    assert {"demo_case", *CASE_STAGES} <= jobs["demo-002"]
    cohort_rules = jobs.get("-", set()) - {"all"}
    assert cohort_rules <= {"report", "radiomics_cohort"}  # cohort tables are rebuilt, nothing per case


@pytest.mark.workflow
@pytest.mark.slow
def test_corrupt_case_fails_alone_and_is_listed(tmp_path):
    if "convert" not in STAGES:
        pytest.skip("the convert stage (ctsam convert) is not in this ctsam yet: nothing reads the corrupt series")
    proc = snakemake(
        tmp_path,
        "--profile",
        "workflow/profiles/local",
        "--cores",
        "2",
        config={
            "workflow": {"demo": {"cases": 2, "corrupt_case": True}},
            "export": {"rtstruct": True, "identity": "deidentify"},
        },
    )
    assert proc.returncode != 0  # --keep-going: the run finishes, but reports the failure
    # the optional export of the completed case: a de-identified RTSTRUCT
    import pydicom

    rt = pydicom.dcmread(tmp_path / "results" / "demo-001" / "rtstruct.dcm")
    assert rt.Modality == "RTSTRUCT" and rt.PatientIdentityRemoved == "YES" and len(rt.StructureSetROISequence) > 30
    for stage in CASE_STAGES:
        assert (tmp_path / "results" / "demo-001" / STAGE_FILES[stage]).exists()
    assert not (tmp_path / "results" / "demo-002" / STAGE_FILES["convert"]).exists()
    failures = read_tsv(tmp_path / "results" / "cohort" / "failures.tsv")
    assert [(f["case"], f["stage"]) for f in failures] == [("demo-002", "convert")]
    reason = failures[0]["reason"]
    assert "\n" not in reason and reason and "case demo-002" in reason
    status = {r["case"]: r["status"] for r in read_tsv(tmp_path / "results" / "cohort" / "status.tsv")}
    assert status == {"demo-001": "ok", "demo-002": "failed"}
    # the completed case's manifest carries its stage timings
    import json

    stages = json.loads((tmp_path / "results" / "demo-001" / "manifest.json").read_text())["stages"]
    assert {"convert", "fuse", "qc"} <= set(stages) and all(
        s["benchmark"]["wall_s"] is not None for s in stages.values()
    )
    # the cohort report and tables still come out, for the completed case, and list the failed one
    if "report" in STAGES:
        html = (tmp_path / "results" / "cohort" / "report.html").read_text()
        failed_section = html[html.index("id='failed'") :]
        assert "demo-002" in failed_section and "convert" in failed_section and "no failure list" not in html
        assert "id='case-demo-001'" in html and "id='case-demo-002'" not in html
        import pandas as pd

        qc = pd.read_parquet(tmp_path / "results" / "cohort" / "report_qc.parquet")
        assert set(qc["case"]) == {"demo-001"}
    if "radiomics_cohort" in STAGES:
        import pandas as pd

        rad = pd.read_parquet(tmp_path / "results" / "cohort" / "radiomics.parquet")
        assert set(rad["case"]) == {"demo-001"}
