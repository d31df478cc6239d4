"""Weights preflight: every required file is listed; missing or half-copied ones fail fast (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctsam.coarse.weights import TS_MODELS, check_weights, default_weights_root, required_task_ids
from ctsam.errors import InputDataError
from tests.coarse.tsfixture import write_fake_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _populate(root: Path, task_ids) -> None:
    for task_id in task_ids:
        for rel in TS_MODELS[task_id].required_files():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.suffix == ".pth":
                write_fake_checkpoint(p)
            else:
                p.write_text(json.dumps({"ok": True}))


def test_required_task_ids():
    assert required_task_ids("fast") == (297,)
    assert required_task_ids("full") == (291, 292, 293, 294, 295)
    assert required_task_ids("fast", roi_subset=True) == (297, 298)
    assert required_task_ids("full", roi_subset=True, robust_crop=True) == (291, 292, 293, 294, 295, 297)
    assert required_task_ids("fastest", roi_subset=True) == (298,)
    with pytest.raises(ValueError, match="mode"):
        required_task_ids("turbo")


def test_table_matches_installed_totalsegmentator():
    cfg = pytest.importorskip("totalsegmentator.map_tasks_config", reason="TotalSegmentator >= 2.17 not installed")
    subs = cfg.TASK_CONFIGS["total"]["sub_modes"]
    assert subs["default"]["task_id"] == [291, 292, 293, 294, 295]
    assert subs["fast"]["task_id"] == 297 and subs["fastest"]["task_id"] == 298
    for task_id, model in TS_MODELS.items():
        assert cfg.TASK_ID_WEIGHTS_CONFIGS[task_id]["foldername"] == model.folder
        assert "rel_path" not in cfg.TASK_ID_WEIGHTS_CONFIGS[task_id]
        mode = {297: "fast", 298: "fastest"}.get(task_id, "default")
        assert subs[mode]["trainer"] == model.trainer
        assert cfg.DEFAULT_CONFIG["folds"] == list(model.folds)
        assert cfg.DEFAULT_CONFIG["model"] == model.configuration
    # the download command names tasks that really fetch these folders
    import importlib.util

    spec = importlib.util.find_spec("totalsegmentator.bin.totalseg_download_weights")
    text = Path(spec.origin).read_text()
    for model in TS_MODELS.values():
        for task in model.download_tasks:
            assert f'"{task}": [' in text
    import totalsegmentator.bin.totalseg_download_weights as dl

    for model in TS_MODELS.values():
        assert all(model.task_id in dl.TASK_TO_ID[t] for t in model.download_tasks)


def test_default_weights_root_honours_env(tmp_path):
    assert default_weights_root({"TOTALSEG_WEIGHTS_PATH": str(tmp_path)}) == tmp_path
    assert default_weights_root({"TOTALSEG_HOME_DIR": str(tmp_path)}) == tmp_path / "nnunet" / "results"


def test_complete_tree_passes(tmp_path):
    _populate(tmp_path, (297, 298))
    report = check_weights("fast", roi_subset=True, root=tmp_path)
    assert report.ok and len(report.required) == 6


def test_missing_tree_lists_every_file_and_the_command(tmp_path):
    report = check_weights("full", root=tmp_path / "nowhere")
    assert len(report.problems) == 15
    err = report.error(case="c001")
    text = str(err)
    for rel in report.required:
        assert rel in text
    assert "totalseg_download_weights -t total`" in text
    assert "does not exist" in text and "c001" in text


def test_half_copied_folders_are_named(tmp_path):
    _populate(tmp_path, (297, 298))
    base297 = tmp_path / TS_MODELS[297].folder / TS_MODELS[297].trainer_folder
    base298 = tmp_path / TS_MODELS[298].folder / TS_MODELS[298].trainer_folder
    (base297 / "fold_0" / "checkpoint_final.pth").write_bytes(b"")  # zero-size
    ckpt = base298 / "fold_0" / "checkpoint_final.pth"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated copy
    (base298 / "plans.json").write_text('{"configurations": {')  # truncated JSON
    report = check_weights("fast", roi_subset=True, root=tmp_path)
    problems = {Path(p.relpath).name + str(p.task_id): p.problem for p in report.problems}
    assert "empty" in problems["checkpoint_final.pth297"]
    assert "truncated" in problems["checkpoint_final.pth298"]
    assert "JSON" in problems["plans.json298"]
    assert len(report.problems) == 3
    with pytest.raises(InputDataError, match="3 of 6 required files"):
        raise report.error()
    assert report.download_commands() == ["totalseg_download_weights -t total_fast"]


def _ctsam(*args, env_extra=None, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ctsam", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )
    return proc, time.perf_counter() - t0


def test_cli_weights_check_exit_2_fast(tmp_path):
    proc, seconds = _ctsam("weights", "check", "--fast", "--weights", str(tmp_path / "w"))
    assert proc.returncode == 2, proc.stderr
    for rel in TS_MODELS[297].required_files():
        assert rel in proc.stdout and rel in proc.stderr
    assert "totalseg_download_weights -t total_fast" in proc.stderr
    assert seconds < 30  # generous for a loaded CI machine; it takes well under a second


def test_cli_weights_check_ok_json(tmp_path):
    _populate(tmp_path, (297,))
    proc, _ = _ctsam("weights", "check", "--fast", "--json", "--weights", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and len(report["required_files"]) == 3


def test_cli_coarse_missing_weights_exit_2_before_running(tmp_path):
    ct = tmp_path / "ct.nii.gz"  # never read: the preflight comes first
    proc, seconds = _ctsam(
        "coarse",
        str(ct),
        "-o",
        str(tmp_path / "out.nii.gz"),
        "--backend",
        "totalsegmentator",
        "--fast",
        env_extra={"TOTALSEG_WEIGHTS_PATH": str(tmp_path / "weights")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Dataset297_TotalSegmentator_total_3mm_1559subj" in proc.stderr
    assert "checkpoint_final.pth" in proc.stderr
    assert "totalseg_download_weights -t total_fast" in proc.stderr
    assert not (tmp_path / "out.nii.gz").exists()
    assert seconds < 30


def test_cli_weights_check_reads_mode_from_config(tmp_path):
    _populate(tmp_path / "w", (297,))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"coarse:\n  totalsegmentator:\n    mode: fast\n    weights_path: {tmp_path / 'w'}\n")
    proc, _ = _ctsam("weights", "check", "--config", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["task_ids"] == [297]
