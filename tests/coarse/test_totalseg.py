"""Coarse stage, ``totalsegmentator`` backend: the real TotalSegmentator CLI, offline, on CPU,
with a tiny random-weight model (tests/coarse/tsfixture.py, ctsam/coarse/fixture_model.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from ctsam import labels as L
from ctsam.coarse.totalseg import TsOptions, build_command, run_totalsegmentator
from ctsam.coarse.weights import TS_MODELS, check_weights
from ctsam.errors import ConfigError, ExternalToolError
from ctsam.io.image import read_ct, read_labelmap, write_ct
from ctsam.io.labeltable import read_label_tsv
from ctsam.volume import CTVolume, Geometry
from tests.coarse.tsfixture import ts_fixture_weights, write_fake_checkpoint  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


def _ctsam(*args, env_extra=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    cmd = [sys.executable, "-m", "ctsam", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


# ---------------------------------------------------------------------------- options
def test_options_validate():
    with pytest.raises(ConfigError, match="mode"):
        TsOptions(mode="turbo")
    with pytest.raises(ConfigError, match="device"):
        TsOptions(device="cuda")
    with pytest.raises(ConfigError, match="roi_subset"):
        TsOptions(roi_subset=("livr",))
    assert TsOptions(device="gpu:1", roi_subset=("liver",)).roi_subset == ("liver",)


def test_command_line():
    opts = TsOptions(mode="fast", device="cpu", roi_subset=("liver", "spleen"), robust_crop=True, threads_saving=2)
    cmd = build_command("TS", Path("/a/ct.nii.gz"), Path("/j/seg.nii.gz"), Path("/j/r.json"), opts)
    assert cmd[:9] == ["TS", "-i", "/a/ct.nii.gz", "-o", "/j/seg.nii.gz", "-ml", "-ta", "total", "-d"]
    assert "-f" in cmd and cmd[cmd.index("-rs") + 1 : cmd.index("-rs") + 3] == ["liver", "spleen"] and "-rc" in cmd
    assert cmd[cmd.index("-ns") + 1] == "2" and cmd[cmd.index("--report") + 1] == "/j/r.json"


# ---------------------------------------------------------------------------- error paths (no TotalSegmentator needed)
def _fake_weights(root: Path) -> Path:
    for rel in TS_MODELS[297].required_files():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".pth":
            write_fake_checkpoint(p)
        else:
            p.write_text("{}")
    return root


def _script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "fake_totalseg.sh"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def _tiny_ct(tmp_path: Path) -> Path:
    path = tmp_path / "ct.nii.gz"
    write_ct(path, CTVolume(np.zeros((4, 5, 6), np.int16), Geometry((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))))
    return path


def test_failure_gives_external_tool_error_with_log_tail(tmp_path):
    exe = _script(tmp_path, 'echo "line one"; echo "Traceback: something broke" >&2; exit 1')
    opts = TsOptions(mode="fast", device="cpu", executable=exe, weights_path=str(_fake_weights(tmp_path / "w")))
    with pytest.raises(ExternalToolError, match="exit code 1") as info:
        run_totalsegmentator(_tiny_ct(tmp_path), tmp_path / "job", opts, case="c9")
    text = str(info.value)
    assert "something broke" in text and "line one" in text and "c9" in text
    assert info.value.exit_code == 3


def test_no_output_is_an_error(tmp_path):
    exe = _script(tmp_path, "exit 0")
    opts = TsOptions(mode="fast", executable=exe, weights_path=str(_fake_weights(tmp_path / "w")))
    with pytest.raises(ExternalToolError, match="wrote no output"):
        run_totalsegmentator(_tiny_ct(tmp_path), tmp_path / "job", opts)


def test_timeout_stops_the_process(tmp_path):
    exe = _script(tmp_path, "echo started; sleep 60")
    opts = TsOptions(mode="fast", executable=exe, timeout_s=1, weights_path=str(_fake_weights(tmp_path / "w")))
    with pytest.raises(ExternalToolError, match="did not finish within 1 s") as info:
        run_totalsegmentator(_tiny_ct(tmp_path), tmp_path / "job", opts)
    assert "started" in str(info.value)


def test_sandbox_and_gpu_fallback_warning(tmp_path):
    # records its environment, writes an "output", and prints TotalSegmentator's CPU-fallback line
    exe = _script(
        tmp_path,
        'env > "$PWD/env.txt"; cp "$TOTALSEG_HOME_DIR/config.json" "$PWD/seen_config.json"; '
        'echo "No GPU detected. Running on CPU."; while [ "$1" != "-o" ]; do shift; done; touch "$2"',
    )
    weights = _fake_weights(tmp_path / "w")
    opts = TsOptions(mode="fast", device="gpu", executable=exe, weights_path=str(weights))
    run, side = run_totalsegmentator(_tiny_ct(tmp_path), tmp_path / "job", opts, while_running=lambda: 42)
    assert side == 42
    assert run.device_fallback and "ran on the CPU" in run.warnings[0]
    env = dict(line.split("=", 1) for line in (tmp_path / "job" / "env.txt").read_text().splitlines() if "=" in line)
    assert env["TOTALSEG_WEIGHTS_PATH"] == str(weights)
    assert env["TOTALSEG_HOME_DIR"] == str((tmp_path / "job" / "home").resolve())
    assert env["TMPDIR"] == str((tmp_path / "job" / "tmp").resolve())
    seen = json.loads((tmp_path / "job" / "seen_config.json").read_text())
    assert seen["send_usage_stats"] is False and seen["statistics_disclaimer_shown"] is True


def test_error_while_running_stops_totalsegmentator(tmp_path):
    marker = tmp_path / "still_running"
    exe = _script(tmp_path, f'sleep 2; touch "{marker}"')
    opts = TsOptions(mode="fast", executable=exe, weights_path=str(_fake_weights(tmp_path / "w")))

    def broken():
        raise ValueError("bad CT")

    with pytest.raises(ValueError, match="bad CT"):
        run_totalsegmentator(_tiny_ct(tmp_path), tmp_path / "job", opts, while_running=broken)
    import time

    time.sleep(3)
    assert not marker.exists()  # the process group was stopped


def test_missing_ct_is_an_input_error(tmp_path):
    from ctsam.coarse.stage import run_totalsegmentator_backend
    from ctsam.errors import InputDataError

    opts = TsOptions(
        mode="fast", executable=_script(tmp_path, "exit 0"), weights_path=str(_fake_weights(tmp_path / "w"))
    )
    with pytest.raises(InputDataError, match="image not found"):
        run_totalsegmentator_backend(tmp_path / "nope.nii.gz", tmp_path / "o.nii.gz", opts)


def test_missing_program(tmp_path):
    weights = str(_fake_weights(tmp_path / "w"))
    opts = TsOptions(mode="fast", executable="no-such-TotalSegmentator", weights_path=weights)
    with pytest.raises(ExternalToolError, match="program was not found"):
        run_totalsegmentator(_tiny_ct(tmp_path), tmp_path / "job", opts)


# ---------------------------------------------------------------------------- the real thing
def test_fixture_model_passes_preflight(ts_fixture_weights):
    assert check_weights("fast", root=ts_fixture_weights).ok
    assert not check_weights("full", root=ts_fixture_weights).ok


@pytest.fixture(scope="module")
def ts_run(ts_fixture_weights, shared_data, tmp_path_factory):
    """`ctsam coarse --backend totalsegmentator --fast` on example_ct_sm.nii.gz with the fixture model."""
    out_dir = tmp_path_factory.mktemp("coarse_ts")
    ct = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    out = out_dir / "coarse.nii.gz"
    proc = _ctsam(
        "coarse",
        str(ct),
        "-o",
        str(out),
        "--backend",
        "totalsegmentator",
        "--fast",
        "--device",
        "cpu",
        "--case",
        "ts01",
        env_extra={"TOTALSEG_WEIGHTS_PATH": str(ts_fixture_weights)},
    )
    return proc, ct, out


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_totalsegmentator_run(ts_run, ts_fixture_weights):
    proc, ct_path, out = ts_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    ct = read_ct(ct_path)
    lm = read_labelmap(out)
    # grid and dtype
    assert lm.geometry.same_space(ct.geometry) and lm.array.shape == ct.array.shape
    import nibabel as nib

    assert nib.load(str(out)).get_data_dtype() == np.uint8
    # label table: the classes present, with their 'total' ids and names, in header and .tsv
    present = lm.present_labels()
    assert present and sorted(lm.labels) == present
    assert all(L.ts_total_name(i) == name for i, name in lm.labels.items())
    assert read_label_tsv(out.with_name("coarse.tsv")) == lm.labels
    # sidecar and provenance
    side = json.loads(out.with_name("coarse.json").read_text())
    prov = side["provenance"]
    assert side["backend"] == "totalsegmentator" and side["case"] == "ts01"
    assert prov["source"] == "TotalSegmentator --report"
    assert prov["totalsegmentator_version"] == metadata.version("TotalSegmentator")
    assert prov["nnunetv2_version"] == metadata.version("nnunetv2")
    assert prov["torch_version"] == metadata.version("torch")
    assert prov["fast"] is True and prov["device"] == "cpu" and prov["weights_root"] == str(ts_fixture_weights)
    assert side["n_classes_found"] == len(present)
    assert len(side["classes_found"]) + len(side["classes_absent"]) == 117
    assert side["label_names_from"] == "output header" and side["unknown_names"] == []
    assert "{job}/seg.nii.gz" in prov["command"]
    assert not any(p.name.endswith(".totalseg_job") for p in out.parent.iterdir())  # sandbox removed


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_totalsegmentator_failure_exit_3(ts_fixture_weights, shared_data, tmp_path):
    import shutil

    broken = tmp_path / "weights"
    shutil.copytree(ts_fixture_weights, broken)
    plans = broken / TS_MODELS[297].folder / TS_MODELS[297].trainer_folder / "plans.json"
    data = json.loads(plans.read_text())
    del data["configurations"]  # valid JSON (passes the preflight), but nnU-Net cannot use it
    plans.write_text(json.dumps(data))
    ct = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    proc = _ctsam(
        "coarse",
        str(ct),
        "-o",
        str(tmp_path / "o.nii.gz"),
        "--backend",
        "totalsegmentator",
        "--fast",
        "--device",
        "cpu",
        "--workdir",
        str(tmp_path / "job"),
        env_extra={"TOTALSEG_WEIGHTS_PATH": str(broken)},
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "TotalSegmentator failed with exit code" in proc.stderr
    assert "configurations" in proc.stderr  # the KeyError from nnU-Net, in the log tail
    assert (tmp_path / "job" / "totalsegmentator.log").exists()  # kept for the user
    assert not (tmp_path / "o.nii.gz").exists()
