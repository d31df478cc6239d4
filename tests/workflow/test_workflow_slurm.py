"""The demo cohort on a real SLURM cluster (single host, started by .ci/slurm-up.sh).

Runs the 2-case demo with the SLURM profile (`--executor slurm`) and a local run of the same
config, then checks: every SLURM job of the run is known to SLURM (`scontrol show job`, kept for
MinJobAge=600 s), per-case work is at most 3 SLURM jobs per case, jobs of rules the profile maps
to a GPU requested one (gres/gpu) and no other job did, and the results (CT, label maps) are
byte-identical to the local run's. The refine jobs (the GPU stage) must have asked SLURM for a GPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ctsam.cohort import STAGE_FILES
from tests.workflow.test_workflow import REPO, STAGES, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slurm, pytest.mark.slow]

CONFIG = {"workflow": {"demo": {"cases": 2}}}


def _slurm_ready() -> str | None:
    """None if a SLURM node is usable, else the reason to skip."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed here (sinfo/sbatch missing); run .ci/slurm-up.sh as root to start one"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s in ("idle", "mixed", "allocated") for s in states):
        return f"no usable SLURM node (sinfo rc {proc.returncode}: {proc.stdout.strip() or proc.stderr.strip()})"
    return None


def gpu_rules_in_profile() -> set[str]:
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    out = set()
    for rule, res in (profile.get("set-resources") or {}).items():
        if "gpu" in str(res.get("gres", "")) or res.get("gpu"):
            out.add(rule)
    return out


def scontrol_job(job_id: str) -> dict[str, str]:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    return dict(kv.split("=", 1) for kv in proc.stdout.split() if "=" in kv)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    reason = _slurm_ready()
    if reason:
        pytest.skip(reason)
    local = tmp_path_factory.mktemp("wf-local-ref")
    proc = snakemake(local, "--profile", "workflow/profiles/local", "--cores", "2", config=CONFIG)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    remote = tmp_path_factory.mktemp("wf-slurm")
    proc = snakemake(
        remote,
        "--profile",
        "workflow/profiles/slurm",
        "--jobs",
        "4",
        # the profile's partition is a placeholder (the SLURM preflight refuses it): .ci/slurm-up.sh's is 'debug'
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=4000",
        "runtime=30",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "5",
        "--slurm-keep-successful-logs",
        # the test node has 2 CPUs: the post group runs qc (1 thread) beside radiomics, so radiomics
        # gets 1 thread here (SLURM leaves a job asking for more CPUs than a node has pending forever)
        "--set-threads",
        "radiomics=1",
        config=CONFIG,
        timeout=1200,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    # {SLURM job id: its SLURM log (the jobstep's snakemake output names the rules and wildcards)}
    jobs = dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)", text))
    return local, remote, {j: (Path(log) if Path(log).is_absolute() else remote / log) for j, log in jobs.items()}


def test_jobs_ran_on_slurm_with_at_most_3_jobs_per_case(runs):
    _, _, job_ids = runs
    assert job_ids, "no job was submitted to SLURM"
    per_case: dict[str, int] = {}
    for job_id, log in job_ids.items():
        info = scontrol_job(job_id)
        assert info["JobState"] == "COMPLETED", info
        for case in set(re.findall(r"wildcards: .*?\bcase=([A-Za-z0-9._-]+)", log.read_text())):
            per_case[case] = per_case.get(case, 0) + 1
    assert set(per_case) == {"demo-001", "demo-002"}
    assert max(per_case.values()) <= 3


def test_gpu_rules_asked_slurm_for_a_gpu(runs):
    _, _, job_ids = runs
    gpu_rules = gpu_rules_in_profile()
    assert "refine" in gpu_rules  # the profile maps the refine rule to a GPU
    asked = {}
    for job_id, log in job_ids.items():
        info = scontrol_job(job_id)
        rules = set(re.findall(r"^\s*(?:local)?rule (\w+):", log.read_text(), re.M))
        wants_gpu = "gpu" in (info.get("TresPerNode", "") + info.get("TresPerJob", "") + info.get("Gres", ""))
        asked[job_id] = (rules, wants_gpu)
    assert all(rules for rules, _ in asked.values()), asked
    for job_id, (rules, wants_gpu) in asked.items():
        assert wants_gpu == bool(rules & gpu_rules), (job_id, rules, wants_gpu)
    assert "refine" in STAGES
    assert any("refine" in rules and g for rules, g in asked.values()), asked


def test_slurm_results_equal_local_results(runs):
    local, remote, _ = runs

    def images(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for d in ("results", "demo") for p in (root / d).rglob("*.nii.gz"))

    files = images(local)
    assert images(remote) == files
    for rel in files:
        assert (remote / rel).read_bytes() == (local / rel).read_bytes(), rel
    expected = {
        f"{d}/{c}/{f}"
        for c in ("demo-001", "demo-002")
        for d, f in [("demo", "coarse.nii.gz"), ("demo", "truth.nii.gz")]
    }
    expected |= {
        f"results/{c}/{STAGE_FILES[s]}"
        for c in ("demo-001", "demo-002")
        for s in STAGES
        if STAGE_FILES.get(s, "").endswith(".nii.gz")
    }
    assert expected <= {str(p) for p in files}
