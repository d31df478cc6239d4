"""The optional lesion stage in the workflow: its place in the case's GPU job, and a real (small) run."""

from __future__ import annotations

import json
import re

import pytest

from ctsam.io.image import read_geometry
from tests.workflow.test_workflow import snakemake

pytestmark = [pytest.mark.workflow]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from ctsam.model import build_model, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny_lesion.safetensors"
    save_model(build_model("sam3d_adapter", "tiny"), path)
    return path


def group_jobs(text: str) -> list[tuple[str, set[tuple[str, str]]]]:
    """(group name, {(rule, case)}) of each group job a dry-run lists."""
    out = []
    for block in re.split(r"\n(?=\[[^\]]*\] Group job )", text)[1:]:
        m = re.match(r"\[[^\]]*\] Group job (\w+)", block)
        jobs = set()
        for rb in re.split(r"\n(?=\s*(?:local)?rule \w+:)", block):
            r = re.match(r"\s*(?:local)?rule (\w+):", rb)
            c = re.search(r"wildcards: .*?\bcase=([^,\s]+)", rb)
            if r and c:
                jobs.add((r.group(1), c.group(1)))
        out.append((m.group(1), jobs))
    return out


def slurm_profile_groups() -> list[str]:
    import yaml

    from tests.workflow.test_workflow import REPO

    return list(yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())["groups"])


def test_lesions_run_in_the_gpu_job_of_refine_and_feed_qc_and_radiomics(tmp_path, tiny_model):
    # the SLURM profile's groups, dry-run with the local executor (the SLURM preflight needs a submit host)
    config = {"workflow": {"demo": {"cases": 2}}, "lesions": {"enabled": True, "checkpoint": str(tiny_model)}}
    proc = snakemake(
        tmp_path, "-n", "-p", "--profile", "workflow/profiles/local", "--groups", *slurm_profile_groups(), config=config
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    groups = group_jobs(text)
    for case in ("demo-001", "demo-002"):
        gpu = [jobs for name, jobs in groups if name == "gpu" and any(c == case for _, c in jobs)]
        assert gpu == [{("refine", case), ("lesions", case)}]
        per_case = {name for name, jobs in groups if any(c == case for _, c in jobs)}
        assert per_case == {"prep", "gpu", "post"}  # still 3 SLURM jobs per case
    assert "--clicks demo/demo-001/lesions.tsv" in text and f"--checkpoint {tiny_model}" in text
    assert "--lesions results/demo-001/lesions.nii.gz" in text  # qc and radiomics take the lesions
    off = snakemake(
        tmp_path / "off",
        "-n",
        "--profile",
        "workflow/profiles/local",
        config={"workflow": {"demo": {"cases": 2}}, "lesions": {"enabled": False}},
    )
    assert off.returncode == 0 and "rule lesions:" not in off.stdout + off.stderr


@pytest.mark.slow
def test_lesion_stage_runs_on_the_demo_clicks(tmp_path, tiny_model):
    config = {
        "workflow": {"demo": {"cases": 1}, "stages": ["convert", "coarse", "lesions"]},
        "lesions": {"checkpoint": str(tiny_model)},
    }
    proc = snakemake(tmp_path, "--profile", "workflow/profiles/local", "--cores", "2", config=config)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    case = tmp_path / "results" / "demo-001"
    assert read_geometry(case / "lesions.nii.gz").same_space(read_geometry(case / "ct.nii.gz"))
    side = json.loads((case / "lesions.json").read_text())
    clicks = (tmp_path / "demo" / "demo-001" / "lesions.tsv").read_text().strip().splitlines()[1:]
    assert side["n_lesions"] == len(clicks) > 0 and side["case"] == "demo-001"
    assert all("containing_structure" in r for r in side["lesions"])  # from the coarse labels
    manifest = json.loads((case / "manifest.json").read_text())
    assert "lesions.nii.gz" in json.dumps(manifest)
    again = snakemake(tmp_path, "--profile", "workflow/profiles/local", "--cores", "2", config=config)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
