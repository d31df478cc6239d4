"""Shared test helpers for the coarse stage: the tiny random-weight TotalSegmentator model.

Import the fixtures into a test module with ``from tests.coarse.tsfixture import ts_fixture_weights, ...``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest


def ts_unavailable_reason() -> str | None:
    """Why the real TotalSegmentator cannot run here, or None."""
    for module in ("totalsegmentator", "nnunetv2", "torch", "dynamic_network_architectures"):
        if importlib.util.find_spec(module) is None:
            return f"python package {module!r} is not installed (pip install -c .ci/constraints.txt -e '.[totalseg]')"
    if not ts_executable():
        return "the TotalSegmentator program is not on PATH nor beside this Python"
    return None


def ts_executable() -> str | None:
    return shutil.which("TotalSegmentator") or (
        str(Path(sys.executable).parent / "TotalSegmentator")
        if (Path(sys.executable).parent / "TotalSegmentator").is_file()
        else None
    )


@pytest.fixture(scope="session")
def ts_fixture_weights(tmp_path_factory) -> Path:
    """A weights root holding the random-weight Dataset297 (3 mm, 117 classes) model."""
    reason = ts_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from ctsam.coarse.fixture_model import build_fixture_weights

    return build_fixture_weights(tmp_path_factory.mktemp("ts_weights"), (297,))


def write_fake_checkpoint(path: Path, n_bytes: int = 4096) -> None:
    """A small, complete zip archive standing in for a checkpoint file (for preflight tests only)."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", os.urandom(n_bytes))
