"""``ctsam weights list|fetch|check`` and the demo-weights guard."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from ctsam.weights import REGISTRY, UNKNOWN, is_demo_phantom_ct

REPO = Path(__file__).resolve().parents[2]
NEEDED = {
    "totalseg_291",
    "totalseg_292",
    "totalseg_293",
    "totalseg_294",
    "totalseg_295",
    "totalseg_297",
    "totalseg_298",
    "ctsam3d",
    "3dsam_kits",
    "3dsam_lits",
    "3dsam_msd_pancreas",
    "3dsam_msd_colon",
    "sam_vit_b",
}


def _ctsam(*args, cwd=None, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "ctsam", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_list_covers_every_model_with_source_licence_size_sha(tmp_path):
    proc = _ctsam("weights", "list", "--json", "--cache-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["cache_dir"] == str(tmp_path)
    rows = {r["name"]: r for r in doc["models"]}
    assert NEEDED <= set(rows)
    for r in rows.values():
        assert r["source"] and r["licence"] and r["size"] and r["sha256"], r
        assert r["source"].startswith(("https://", "manual:")), r
    assert rows["sam_vit_b"]["sha256"] == UNKNOWN  # honest: not published
    assert rows["3dsam_kits"]["source"].startswith("manual:")


def test_cache_folder_from_env(tmp_path):
    proc = _ctsam("weights", "list", "--json", env_extra={"CTSAM_WEIGHTS": str(tmp_path / "c")})
    assert json.loads(proc.stdout)["cache_dir"] == str(tmp_path / "c")


def test_fetch_without_network_fails_clearly_and_leaves_nothing(tmp_path):
    proc = _ctsam("weights", "fetch", "sam_vit_b", "--cache-dir", str(tmp_path), "--timeout", "5")
    assert proc.returncode == 3, proc.stderr
    assert "cannot download 'sam_vit_b'" in proc.stderr
    assert "login node" in proc.stderr and "--from file:///PATH" in proc.stderr
    assert list(tmp_path.rglob("*")) == []  # no partial file, no empty folder


def test_fetch_manual_source_needs_from(tmp_path):
    proc = _ctsam("weights", "fetch", "3dsam_kits", "--cache-dir", str(tmp_path))
    assert proc.returncode == 2 and "has no direct download" in proc.stderr and "--from file:///PATH" in proc.stderr


def test_fetch_from_file_records_sha256_and_check_detects_damage(tmp_path):
    src = tmp_path / "kits.pth"
    src.write_bytes(b"not really a model, but bytes with a digest")
    cache = tmp_path / "cache"
    proc = _ctsam("weights", "fetch", "3dsam_kits", "--from", src.as_uri(), "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((cache / "3dsam_kits" / "fetched.json").read_text())
    assert record["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert record["size_bytes"] == src.stat().st_size and record["sha256_published"] is None
    env = {"CTSAM_WEIGHTS": str(cache), "TOTALSEG_WEIGHTS_PATH": str(tmp_path / "ts")}
    (tmp_path / "config.yaml").write_text("coarse:\n  backend: labels\n")
    proc = _ctsam("weights", "check", "--json", cwd=tmp_path, env_extra=env)
    fetched = json.loads(proc.stdout)["cache"]["fetched"]
    assert fetched == [{"name": "3dsam_kits", "status": "ok", "detail": fetched[0]["detail"]}]
    (cache / "3dsam_kits" / "kits.pth").write_bytes(b"tampered")
    proc = _ctsam("weights", "check", "--json", cwd=tmp_path, env_extra=env)
    assert json.loads(proc.stdout)["cache"]["fetched"][0]["status"] == "mismatch"


def test_fetch_totalseg_zip_unpacks_into_the_weights_root(tmp_path):
    tree = tmp_path / "tree"
    proc = _ctsam("weights", "fixture", str(tree), "--task-ids", "297")
    assert proc.returncode == 0, proc.stderr
    archive = tmp_path / "Dataset297.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(tree.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(tree).as_posix())
    root = tmp_path / "ts-root"
    env = {"TOTALSEG_WEIGHTS_PATH": str(root)}
    proc = _ctsam(
        "weights",
        "fetch",
        "totalseg_297",
        "--from",
        archive.as_uri(),
        "--cache-dir",
        str(tmp_path / "c"),
        env_extra=env,
    )
    assert proc.returncode == 0, proc.stderr
    proc = _ctsam("weights", "check", "--fast", "--json", env_extra=env)
    assert json.loads(proc.stdout)["ok"] is True, proc.stdout


def test_registry_names_are_unique_and_described():
    assert len(REGISTRY) == len({e.filename for e in REGISTRY.values()})
    assert all(e.used_by and e.model for e in REGISTRY.values())


def test_demo_marker_is_read_from_the_ct_sidecar(tmp_path):
    ct = tmp_path / "ct.nii.gz"
    assert not is_demo_phantom_ct(ct)
    (tmp_path / "ct.json").write_text(json.dumps({"manufacturer": "ctsam", "manufacturer_model_name": "demo phantom"}))
    assert is_demo_phantom_ct(ct)
    (tmp_path / "ct.json").write_text(json.dumps({"manufacturer": "SIEMENS", "manufacturer_model_name": "x"}))
    assert not is_demo_phantom_ct(ct)


def test_refine_refuses_demo_weights_on_a_real_ct_unless_allowed(tmp_path):
    ct = tmp_path / "ct.nii.gz"  # never read: the guard comes first
    args = ["refine", str(ct), str(tmp_path / "p.json"), "-o", str(tmp_path / "r.npz"), "--case", "c9"]
    (tmp_path / "config.yaml").write_text("refine:\n  checkpoint: builtin:demo_micro\n")
    proc = _ctsam(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "trained on demo phantoms only" in proc.stderr and "case c9" in proc.stderr
    assert "weights.allow_demo_weights: true" in proc.stderr
    (tmp_path / "config.yaml").write_text("weights:\n  allow_demo_weights: true\n")
    proc = _ctsam(*args, cwd=tmp_path)
    assert "trained on demo phantoms only" not in proc.stderr  # goes on (and fails later: no prompts file)
    (tmp_path / "ct.json").write_text(json.dumps({"manufacturer": "ctsam", "manufacturer_model_name": "demo phantom"}))
    (tmp_path / "config.yaml").write_text("refine:\n  device: cpu\n")
    proc = _ctsam(*args, cwd=tmp_path)
    assert "trained on demo phantoms only" not in proc.stderr  # a demo phantom: fine
