"""Helpers of the fault-injection suite: one small demo case run through the CPU stages once per
session (the reference outputs), the stage command lines, and finders for ctsam temp files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CASE = "demo-001"


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH", "")]))
    e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
    return e


def ctsam(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m ctsam ARGS`` in a subprocess (this worktree's code), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ctsam", *map(str, args)],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen_ctsam(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ctsam", *map(str, args)],
        cwd=cwd,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def temp_files(root: Path) -> list[Path]:
    """ctsam temp files (and the hidden ``.<name>.*.tmp*`` files older versions left) below ``root``."""
    return sorted(
        p for p in Path(root).rglob("*") if ".ctsam-tmp." in p.name or (p.name.startswith(".") and ".tmp" in p.name)
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(Path(root).rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Stage:
    """One stage's command (placeholders {study} {labels} {in} {out}) and the files it writes."""

    name: str
    args: tuple[str, ...]
    inputs: tuple[str, ...]  # files of the reference case folder the stage reads
    outputs: tuple[str, ...]


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage(
            "convert",
            ("convert", "{study}", "-o", "{out}/ct.nii.gz", "--sidecar", "{out}/ct.json"),
            (),
            ("ct.nii.gz", "ct.json"),
        ),
        Stage(
            "coarse",
            (
                "coarse",
                "{in}/ct.nii.gz",
                "-o",
                "{out}/coarse.nii.gz",
                "--sidecar",
                "{out}/coarse.json",
                "--backend",
                "labels",
                "--labels",
                "{labels}",
            ),
            ("ct.nii.gz",),
            ("coarse.nii.gz", "coarse.tsv", "coarse.json"),
        ),
        Stage(
            "seed",
            ("seed", "{in}/ct.nii.gz", "{in}/coarse.nii.gz", "-o", "{out}/prompts.json"),
            ("ct.nii.gz", "coarse.nii.gz", "coarse.tsv"),
            ("prompts.json",),
        ),
        Stage(
            "fuse",
            ("fuse", "{in}/coarse.nii.gz", "-o", "{out}/labels.nii.gz", "--sidecar", "{out}/fuse.json"),
            ("coarse.nii.gz", "coarse.tsv"),
            ("labels.nii.gz", "labels.tsv", "fuse.json"),
        ),
        Stage(
            "qc",
            (
                "qc",
                "{in}/ct.nii.gz",
                "{in}/labels.nii.gz",
                "--coarse",
                "{in}/coarse.nii.gz",
                "--fuse-sidecar",
                "{in}/fuse.json",
                "-o",
                "{out}/qc.json",
            ),
            ("ct.nii.gz", "labels.nii.gz", "labels.tsv", "coarse.nii.gz", "coarse.tsv", "fuse.json"),
            ("qc.json",),
        ),
        Stage(
            "radiomics",
            ("radiomics", "{in}/ct.nii.gz", "{in}/labels.nii.gz", "-o", "{out}/radiomics.parquet", "--workers", "1"),
            ("ct.nii.gz", "labels.nii.gz", "labels.tsv"),
            ("radiomics.parquet", "radiomics.json"),
        ),
    ]
}


def stage_args(stage: Stage, *, study: Path, labels: Path, src: Path, out: Path, case: str = CASE) -> list[str]:
    fill = {"{study}": str(study), "{labels}": str(labels), "{in}": str(src), "{out}": str(out)}
    args = []
    for a in stage.args:
        for k, v in fill.items():
            a = a.replace(k, v)
        args.append(a)
    return [*args, "--case", case]


@dataclass(frozen=True)
class DemoCase:
    study: Path  # DICOM folder
    labels: Path  # coarse label map given to the 'labels' backend
    results: Path  # reference outputs of every stage in STAGES (one folder)


@pytest.fixture(scope="session")
def demo_case(tmp_path_factory) -> DemoCase:
    """One demo phantom, run once through every stage of :data:`STAGES` (about 15 s)."""
    root = tmp_path_factory.mktemp("reliability-demo")
    proc = ctsam("demo-cohort", root / "demo", "--cases", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    case = DemoCase(
        study=root / "demo" / CASE / "dicom",
        labels=root / "demo" / CASE / "coarse.nii.gz",
        results=root / "results" / CASE,
    )
    for stage in STAGES.values():
        proc = ctsam(*stage_args(stage, study=case.study, labels=case.labels, src=case.results, out=case.results))
        assert proc.returncode == 0, (stage.name, proc.stderr[-3000:])
    return case


def copy_inputs(case: DemoCase, stage: Stage, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in stage.inputs:
        shutil.copy2(case.results / name, dest / name)
    return dest


def can_mount_tmpfs(where: Path) -> bool:
    """True if this process may mount a tmpfs (root in a container with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, check=False
        ).returncode
        == 0
    )
    if ok:
        subprocess.run(["umount", str(where)], capture_output=True, check=False)
    return ok
