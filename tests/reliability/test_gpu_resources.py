"""GPU jobs never share a GPU by accident: every GPU rule declares resources gpu=1, the local profile
caps gpu at 1, and the SLURM profile turns refine's GPU into --gres."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.workflow.test_workflow import REPO, snakemake

GPU_RULES = ("refine", "lesions")


def test_every_gpu_rule_declares_the_gpu_resource_and_profiles_limit_it():
    for rule in GPU_RULES:
        text = (REPO / "rules" / f"{rule}.smk").read_text()
        assert re.search(r"^\s+gpu=GPU_RESOURCE", text, re.MULTILINE), rule
    local = yaml.safe_load((REPO / "workflow" / "profiles" / "local" / "config.yaml").read_text())
    assert "gpu=1" in local["resources"]
    slurm = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    for rule in GPU_RULES:  # SLURM: the GPU comes from gres (the plugin refuses gpu and gres together)
        assert slurm["set-resources"][rule]["gres"] == "gpu:1" and slurm["set-resources"][rule]["gpu"] == 0


def _job_intervals(log_text: str, rule: str) -> list[tuple[int, int]]:
    """(start line, finish line) in Snakemake's main log of each job of ``rule``; the log is written by
    one process in event order, so its line numbers order the events."""
    lines = log_text.splitlines()
    starts: dict[str, int] = {}
    for i, line in enumerate(lines):
        if re.match(rf"^\s*(local)?rule {rule}:", line):
            for j in range(i + 1, min(i + 12, len(lines))):
                m = re.match(r"^\s*jobid: (\d+)", lines[j])
                if m:
                    starts[m.group(1)] = i
                    break
    out = []
    for jobid, start in starts.items():
        end = next(i for i, line in enumerate(lines) if re.search(rf"Finished job(id)?:? {jobid}\b", line))
        out.append((start, end))
    return sorted(out)


def _log_span(path: Path) -> tuple[datetime, datetime]:
    stamps = [
        datetime.strptime(m.group(1), "%H:%M:%S")
        for m in re.finditer(r"^(\d\d:\d\d:\d\d) ", path.read_text(), re.MULTILINE)
    ]
    return stamps[0], stamps[-1]


@pytest.mark.workflow
@pytest.mark.slow
def test_two_gpu_jobs_do_not_overlap_under_the_local_profile(tmp_path):
    """Two demo cases, 2 cores, refine made cheap: with gpu=1 the two refine jobs run one after the
    other (without the resource both would start as soon as their prompts exist)."""
    config = {
        "workflow": {"demo": {"cases": 2}, "stages": ["convert", "coarse", "seed", "refine"]},
        "refine": {"rounds": 1, "max_patches_per_structure": 1, "propagation": False},
    }
    proc = snakemake(tmp_path, "--profile", "workflow/profiles/local", "--cores", "2", config=config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = sorted((tmp_path / ".snakemake" / "log").glob("*.snakemake.log"))
    intervals = _job_intervals(logs[-1].read_text(), "refine")
    assert len(intervals) == 2, logs[-1].read_text()
    (_, e1), (s2, _) = intervals
    assert e1 < s2, f"refine jobs overlapped in the Snakemake log: lines {intervals}"
    # the jobs' own logs agree (second resolution): the later one started no earlier than the first ended
    spans = sorted(_log_span(tmp_path / "results" / c / "logs" / "refine.log") for c in ("demo-001", "demo-002"))
    assert spans[1][0] >= spans[0][1]
