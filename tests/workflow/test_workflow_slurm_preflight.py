"""SLURM preflight: the SLURM profile fails in seconds with the fix when SLURM is absent or the
profile still holds placeholders, before anything is submitted (also in ``-n``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctsam.slurm_preflight import intended_executor, slurm_problems

REPO = Path(__file__).resolve().parents[2]


def _bin_without_slurm(tmp_path: Path) -> str:
    """A PATH with the shell tools Snakemake needs and this Python, but no SLURM command."""
    d = tmp_path / "bin"
    d.mkdir()
    for tool in ("bash", "sh", "which", "env"):
        for base in ("/usr/bin", "/bin"):
            if (Path(base) / tool).exists():
                (d / tool).symlink_to(Path(base) / tool)
                break
    return os.pathsep.join([str(d), str(Path(sys.executable).parent)])


def _snakemake(tmp_path: Path, *args: str, path: str) -> subprocess.CompletedProcess:
    work = tmp_path / "run"
    work.mkdir(exist_ok=True)
    (work / "test-config.yaml").write_text(yaml.safe_dump({"workflow": {"demo": {"cases": 1}}}))
    env = dict(os.environ, PATH=path)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--directory",
        str(work),
        "--configfile",
        str(work / "test-config.yaml"),
        "--profile",
        "workflow/profiles/slurm",
        *args,
    ]
    # a hang fails the test through the timeout
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.workflow
@pytest.mark.parametrize("dry", [True, False])
def test_slurm_profile_without_slurm_fails_fast_with_the_fix(tmp_path, dry):
    proc = _snakemake(tmp_path, *(["-n"] if dry else []), path=_bin_without_slurm(tmp_path))
    assert proc.returncode != 0
    text = proc.stderr
    assert "SLURM preflight" in text and "nothing was submitted" in text
    assert "sbatch, sinfo, squeue, scancel not found on PATH" in text
    assert "--profile workflow/profiles/local" in text  # the fix
    assert "slurm_partition: 'CHANGE_ME' is a placeholder" in text
    assert "Traceback" not in text
    assert not (tmp_path / "run" / ".snakemake" / "slurm_logs").exists()


def _which(present=("sbatch", "sinfo", "squeue", "scancel")):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def _sinfo(stdout: str | None):
    def run(cmd, **kwargs):
        assert cmd[0] == "sinfo"
        if stdout is None:
            raise subprocess.TimeoutExpired(cmd, 10)
        return subprocess.CompletedProcess(cmd, 0, stdout=stdout, stderr="")

    return run


def test_ready_cluster_passes():
    problems = slurm_problems(
        {"slurm_partition": "cpu", "mem_mb": "4000"},
        {"refine": {"slurm_partition": "gpu", "gres": "gpu:1", "gpu": "0"}},
        which=_which(),
        run=_sinfo("cpu*|(null)\ngpu|gpu:a100:4\n"),
    )
    assert problems == []


@pytest.mark.parametrize(
    ("default", "per_rule", "listing", "expected"),
    [
        ({"slurm_partition": "CHANGE_ME"}, {}, "cpu|(null)\n", "slurm_partition: 'CHANGE_ME' is a placeholder"),
        (
            {"slurm_partition": "cpu", "slurm_account": "<your-account>"},
            {},
            "cpu|(null)\n",
            "slurm_account: '<your-account>' is a placeholder",
        ),
        (
            {"slurm_partition": "cpux"},
            {},
            "cpu|(null)\ngpu|gpu:2\n",
            "partition 'cpux' (used by (every rule)) does not exist; sinfo lists cpu, gpu",
        ),
        (
            {"slurm_partition": "cpu"},
            {"refine": {"gres": "gpu:1"}},
            "cpu|(null)\n",
            "partition 'cpu' has no GPUs (sinfo %G: (null)) but refine asks for one",
        ),
        (
            {"slurm_partition": "gpu"},
            {"refine": {"gres": "gpu:one"}},
            "gpu|gpu:2\n",
            "gres: 'gpu:one' is not a valid GPU request",
        ),
        ({"slurm_partition": "gpu"}, {"refine": {"gpu": "one"}}, "gpu|gpu:2\n", "gpu: 'one' is not a GPU count"),
        ({"slurm_partition": "cpu"}, {"refine": {"gpus": "2"}}, "cpu|(null)\n", "partition 'cpu' has no GPUs"),
    ],
)
def test_each_problem_is_named(default, per_rule, listing, expected):
    problems = slurm_problems(default, per_rule, which=_which(), run=_sinfo(listing))
    assert any(expected in p for p in problems), problems


def test_missing_commands_and_unanswering_sinfo():
    problems = slurm_problems({"slurm_partition": "cpu"}, {}, which=_which(present=("sinfo",)), run=_sinfo(None))
    assert problems == [
        (
            "sbatch, squeue, scancel not found on PATH: this machine is not a SLURM submit host. Fix: "
            "run on the cluster's login node (with SLURM's commands on PATH), or run locally: --profile "
            "workflow/profiles/local"
        )
    ]
    # sinfo that does not answer in time: partitions cannot be checked, and nothing hangs
    assert slurm_problems({"slurm_partition": "cpu"}, {}, which=_which(), run=_sinfo(None)) == []


def test_executor_read_from_the_command_line_or_profile():
    assert intended_executor(["snakemake", "--executor", "slurm"], env={}) == "slurm"
    assert intended_executor(["snakemake", "-e", "slurm"], env={}) == "slurm"
    assert intended_executor(["snakemake", "--profile", str(REPO / "workflow/profiles/slurm")], env={}) == "slurm"
    assert intended_executor(["snakemake", "--profile", str(REPO / "workflow/profiles/local")], env={}) is None
