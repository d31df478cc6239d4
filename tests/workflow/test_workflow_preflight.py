"""The workflow validates config and inputs at parse time: in a dry run, before any job, and also
when every result is up to date. Each test runs real Snakemake (dry runs where possible)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.workflow


def snakemake(
    workdir: Path, *args: str, config: dict, env_extra: dict | None = None, timeout: int = 300, profile: str = "local"
) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "test-config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, **(env_extra or {}))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "test-config.yaml"),
        "--profile",
        f"workflow/profiles/{profile}",
        *args,
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _ctsam_lines(text: str) -> list[str]:
    """The message block the workflow prints (from its 'ctsam:' line to the end)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ctsam:"))
    return lines[start:]


def _study(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "IM0001.dcm").write_bytes(b"\0" * 132 + b"DICM")  # never read by a dry run
    return d


def test_unknown_key_stops_the_dry_run_in_a_few_lines(tmp_path):
    proc = snakemake(tmp_path, "-n", config={"workflow": {"demo": {"cases": 1}}, "seed": {"max_negativs": 3}})
    assert proc.returncode != 0
    lines = _ctsam_lines(proc.stderr)
    assert "did you mean 'seed.max_negatives'?" in proc.stderr
    assert len(lines) <= 4, lines
    assert "Traceback" not in proc.stderr


def test_moved_key_workflow_coarse_backend(tmp_path):
    proc = snakemake(tmp_path, "-n", config={"workflow": {"coarse_backend": "labels"}})
    assert proc.returncode != 0 and "this key moved: use 'coarse.backend'" in proc.stderr


def test_dry_run_on_own_studies_with_default_config_names_cases_and_missing_pieces(tmp_path):
    studies = tmp_path / "studies"
    _study(studies, "Doe^John")
    _study(studies, "Roe^Jane")
    proc = snakemake(
        tmp_path / "run",
        "-n",
        config={"workflow": {"studies_dir": str(studies)}},
        env_extra={"TOTALSEG_WEIGHTS_PATH": str(tmp_path / "no-weights")},
    )
    assert proc.returncode != 0
    text = proc.stderr
    assert "preflight:" in text and "before any job starts" in text
    # TotalSegmentator (auto: no label maps) weights missing, for both cases, with the key and the fix
    assert "TotalSegmentator weights for mode 'full' incomplete" in text
    assert "key: coarse.totalsegmentator.weights_path" in text and "totalseg_download_weights -t total" in text
    assert "cases case-" in text
    # the phantom-trained model is refused on real data
    assert "key: refine.checkpoint" in text and "ctsam weights fetch ctsam3d" in text
    assert "Doe" not in text and "Roe" not in text  # pseudonymous case ids only
    assert len(_ctsam_lines(text)) < 20
    assert not (tmp_path / "run" / "results").exists()


def test_auto_backend_uses_labels_where_given_and_totalsegmentator_elsewhere(tmp_path):
    studies = tmp_path / "studies"
    _study(studies, "a")
    _study(studies, "b")
    (studies / "a" / "seg.nii.gz").write_bytes(b"\x1f\x8b")  # never read by a dry run
    weights = tmp_path / "ts"
    subprocess.run(
        [sys.executable, "-m", "ctsam", "weights", "fixture", str(weights), "--task-ids", "297"],
        cwd=REPO,
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    config = {
        "workflow": {
            "studies_dir": str(studies),
            "case_ids": "folder",
            "coarse_labels_file": "seg.nii.gz",
            "stages": ["convert", "coarse"],
        },
        "coarse": {"totalsegmentator": {"mode": "fast", "device": "cpu"}},
    }
    proc = snakemake(tmp_path / "run", "-n", "-p", config=config, env_extra={"TOTALSEG_WEIGHTS_PATH": str(weights)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    shell_a = next(line for line in out.splitlines() if "ctsam coarse" in line and "--case a " in line)
    shell_b = next(line for line in out.splitlines() if "ctsam coarse" in line and "--case b " in line)
    assert "--backend labels" in shell_a and "seg.nii.gz" in shell_a
    assert "--backend totalsegmentator" in shell_b and "--labels" not in shell_b
    # threads, memory and conda env follow each case's backend (the stage record's variants)
    blocks = {
        m.group(1): m.group(0)
        for m in re.finditer(r"rule coarse:(?:(?!\n\n).)*?case=(\w+)(?:(?!\n\n).)*", out, re.DOTALL)
    }
    assert "mem_mb=4000" in blocks["a"] and "mem_mb=16000" in blocks["b"], blocks
    # without the weights only case b (the TotalSegmentator case) is named
    proc = snakemake(tmp_path / "run", "-n", config=config, env_extra={"TOTALSEG_WEIGHTS_PATH": str(tmp_path / "x")})
    assert proc.returncode != 0 and "case b: TotalSegmentator weights for mode 'fast'" in proc.stderr


def test_missing_study_fails_the_dry_run_but_not_a_real_run(tmp_path):
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "ct.nii.gz").write_bytes(b"\x1f\x8b")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("case_id\tpath\nok1\ts1/ct.nii.gz\ngone\tno/such/ct.nii.gz\n")
    config = {"workflow": {"samples": str(sheet), "stages": ["convert"]}}
    proc = snakemake(tmp_path / "run", "-n", config=config)
    assert proc.returncode != 0
    assert (
        "case gone: study or CT does not exist" in proc.stderr and "key: workflow.samples (column path)" in proc.stderr
    )
    # a real run warns, and the DAG still builds: the case fails alone (--dag plans without running jobs)
    proc = snakemake(tmp_path / "run", "--dag", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "these cases will fail (the others run)" in proc.stderr and "case gone" in proc.stderr


def test_missing_radiomics_params_and_checkpoint_are_named(tmp_path):
    config = {
        "workflow": {"demo": {"cases": 1}},
        "radiomics": {"params": str(tmp_path / "params.yaml")},
        "refine": {"checkpoint": str(tmp_path / "model.safetensors")},
    }
    proc = snakemake(tmp_path, "-n", config=config)
    assert proc.returncode != 0
    assert "key: radiomics.params" in proc.stderr and "key: refine.checkpoint" in proc.stderr
    assert "refine checkpoint cannot be loaded" in proc.stderr


@pytest.mark.slow
def test_config_checked_also_when_results_are_up_to_date(tmp_path):
    config = {"workflow": {"demo": {"cases": 1}, "stages": ["convert"]}}
    proc = snakemake(tmp_path, "--cores", "1", config=config, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    end = _ctsam_lines(proc.stderr)  # the run ends with where to look
    assert end[0] == "ctsam: run finished"
    assert any(line.startswith("  results:") and "(1 of 1 cases complete)" in line for line in end)
    assert any(line.startswith("  report:") for line in end)
    assert any(line.startswith("  failures:") and "failures.tsv  (0 case(s))" in line for line in end)
    proc = snakemake(tmp_path, "--cores", "1", config=config)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    bad = {**config, "fuse": {"min_volume_ratio": 3.0, "max_volume_ratio": 2.0}}
    proc = snakemake(tmp_path, "--cores", "1", config=bad)
    assert proc.returncode != 0
    assert "'fuse.min_volume_ratio' (3.0) is larger than 'fuse.max_volume_ratio' (2.0)" in proc.stderr


@pytest.mark.slow
def test_sigterm_stops_a_running_workflow(tmp_path):
    (tmp_path / "test-config.yaml").write_text(yaml.safe_dump({"workflow": {"demo": {"cases": 2}}}))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "test-config.yaml"),
        "--profile",
        "workflow/profiles/local",
        "--cores",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # wait until the first job runs
            lines.append(line)
            if line.strip().startswith(("rule ", "localrule ")):
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=300)  # the end still writes status tables and the report
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + rest
    assert proc.returncode != 0
    assert "ctsam: SIGTERM received: cancelling running jobs and stopping" in text
    assert "ctsam: run ended with errors" in text  # onerror ran: status and failure list written
    after = text.split("SIGTERM received")[1]
    assert not re.search(r"^\s*(local)?rule \w+:", after, re.MULTILINE), after  # no job started after it
    assert (tmp_path / "results" / "cohort" / "failures.tsv").exists()
