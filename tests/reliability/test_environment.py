"""The machine's faults: full disk, read-only results, permission denied, missing folders, SIGTERM,
temp files left by a kill. Each is exit code 4 naming the user's output path and the OS reason
(never "please report"), leaves no temp file and no other case's output changed."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ctsam.cli import main
from ctsam.errors import EnvironmentFault
from ctsam.io import atomic
from ctsam.io.atomic import atomic_path, atomic_write_text, remove_stale_temps, temp_target

from .conftest import CASE, ctsam, popen_ctsam, temp_files, tree_digest


@pytest.fixture
def mount_point(tmp_path):
    """A factory mounting a tmpfs (size, options) at a fresh folder; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}); the mocked tests cover this")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True, check=False)


def _assert_env_error(proc, output: Path, reason: str, code: str) -> None:
    assert proc.returncode == 4, proc.stderr
    assert f"cannot write {output}: {reason}" in proc.stderr, proc.stderr
    assert f"found:    {code}: {reason}" in proc.stderr
    assert "please report" not in proc.stderr and "Traceback" not in proc.stderr
    assert ".ctsam-tmp." not in proc.stderr  # the user's path, not a temp file's


def test_full_disk_is_exit_4_naming_the_output(mount_point, demo_case):
    disk = mount_point("tiny", "size=1m")
    good = disk / "results" / "other-case"
    good.mkdir(parents=True)
    (good / "qc.json").write_text("{}\n")
    out = disk / "results" / CASE / "ct.nii.gz"
    proc = ctsam("convert", demo_case.study, "-o", out, "--case", CASE)
    _assert_env_error(proc, out, "No space left on device", "ENOSPC")
    assert not out.exists() and temp_files(disk) == []
    assert (good / "qc.json").read_text() == "{}\n"


def test_read_only_results_is_exit_4(mount_point, demo_case):
    ro = mount_point("ro", "size=1m,ro")
    out = ro / CASE / "ct.nii.gz"
    proc = ctsam("convert", demo_case.study, "-o", out, "--case", CASE)
    assert proc.returncode == 4, proc.stderr
    assert "Read-only file system" in proc.stderr and "EROFS" in proc.stderr and str(out) in proc.stderr
    assert "please report" not in proc.stderr


def test_read_only_existing_case_folder_other_cases_untouched(mount_point, demo_case):
    """A results folder remounted read-only after a good case finished: the next stage fails with 4."""
    disk = mount_point("ro2", "size=8m")
    shutil.copytree(demo_case.results, disk / CASE)
    before = tree_digest(disk)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    proc = ctsam(
        "qc", disk / CASE / "ct.nii.gz", disk / CASE / "labels.nii.gz", "-o", disk / CASE / "qc2.json", "--case", CASE
    )
    _assert_env_error(proc, disk / CASE / "qc2.json", "Read-only file system", "EROFS")
    assert tree_digest(disk) == before


def test_missing_folder_in_output_path_is_exit_4(tmp_path, demo_case):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / CASE / "ct.nii.gz"  # a file where a folder must be
    proc = ctsam("import-ct", demo_case.results / "ct.nii.gz", "-o", out, "--case", CASE)
    _assert_env_error(proc, out, "Not a directory", "ENOTDIR")


@pytest.mark.parametrize(
    "err, code, words",
    [
        (errno.ENOSPC, "ENOSPC", "No space left on device"),
        (errno.EACCES, "EACCES", "Permission denied"),
        (errno.EROFS, "EROFS", "Read-only file system"),
        (errno.EDQUOT, "EDQUOT", "quota"),
    ],
)
def test_mocked_os_errors_during_a_write(tmp_path, monkeypatch, capsys, demo_case, err, code, words):
    """The same faults without root: the rename of a finished temp file fails with the OS error."""

    def refuse(src, dst):
        raise OSError(err, os.strerror(err), str(src))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    out = tmp_path / "results" / CASE / "ct.nii.gz"
    rc = main(["import-ct", str(demo_case.results / "ct.nii.gz"), "-o", str(out), "--case", CASE])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stderr = capsys.readouterr().err
    assert rc == 4, stderr
    assert f"cannot write {out}" in stderr and code in stderr and "please report" not in stderr
    assert temp_files(tmp_path) == [] and not out.exists()
    with pytest.raises(EnvironmentFault) as info, atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("{}")
    assert f"cannot write {tmp_path / 'x.json'}" in str(info.value) and code in str(info.value)
    assert words.lower() in str(info.value).lower() and info.value.exit_code == 4


def test_permission_denied_when_not_root(tmp_path, demo_case):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions (the mocked EACCES test covers this)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = locked / CASE / "ct.nii.gz"
    proc = ctsam("import-ct", demo_case.results / "ct.nii.gz", "-o", out, "--case", CASE)
    assert proc.returncode == 4 and "Permission denied" in proc.stderr and str(out) in proc.stderr


def test_temp_names_are_recognisable_and_map_to_their_output(tmp_path):
    dest = tmp_path / "ct.nii.gz"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and ".ctsam-tmp." in tmp.name and tmp.name.endswith(".nii.gz")
        assert temp_target(tmp) == dest
        tmp.write_bytes(b"x")
    assert dest.read_bytes() == b"x" and temp_files(tmp_path) == []


def test_stale_temps_of_dead_processes_are_removed_on_the_next_write(tmp_path):
    # a temp file of a process that died (a pid that cannot be alive) and one of this live process
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = tmp_path / f".ct.nii.gz.ctsam-tmp.{atomic._host()}.{proc.pid}.abc123.nii.gz"
    live = tmp_path / f".ct.nii.gz.ctsam-tmp.{atomic._host()}.{os.getpid()}.abc123.nii.gz"
    foreign_old = tmp_path / ".qc.json.ctsam-tmp.othernode.12.abc123.json"
    foreign_new = tmp_path / ".qc.json.ctsam-tmp.othernode.13.abc123.json"
    for p in (dead, live, foreign_old, foreign_new):
        p.write_bytes(b"partial")
    old = time.time() - atomic.FOREIGN_STALE_S - 60
    os.utime(foreign_old, (old, old))
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead, foreign_old])
    assert live.exists() and foreign_new.exists()
    live.unlink()
    dead.write_bytes(b"partial")
    atomic_write_text(tmp_path / "ct.nii.gz", "x")  # the next write of that output sweeps too
    assert not dead.exists()


def test_sigterm_during_a_write_removes_the_temp_file(tmp_path):
    atomic.install_sigterm_cleanup()
    try:
        dest = tmp_path / "out.json"
        with pytest.raises(atomic.Terminated), atomic_path(dest) as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGTERM)
        assert temp_files(tmp_path) == [] and not dest.exists()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_sigterm_stops_a_stage_with_143_and_no_debris(tmp_path, demo_case):
    out = tmp_path / "results" / CASE
    proc = popen_ctsam(
        "radiomics",
        demo_case.results / "ct.nii.gz",
        demo_case.results / "labels.nii.gz",
        "-o",
        out / "radiomics.parquet",
        "--workers",
        "1",
        "--case",
        CASE,
    )
    time.sleep(4.0)  # past the imports, inside the extraction
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the stage finished before SIGTERM arrived (a very fast machine)")
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err
    assert temp_files(tmp_path) == [] and not (out / "radiomics.parquet").exists()
