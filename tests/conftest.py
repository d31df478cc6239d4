"""Shared pytest fixtures.

Real CT lives outside the repository (``CTSAM_TEST_DATA``, default ``../shared/data``); tests that
need it use the ``shared_data`` fixture and are skipped with a clear reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("CTSAM_TEST_DATA", REPO.parent / "shared" / "data")).resolve()


def shared_fixtures_dir() -> Path:
    return Path(os.environ.get("CTSAM_TEST_FIXTURES", REPO.parent / "shared" / "fixtures")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"real CT test data not found at {d} (set CTSAM_TEST_DATA to ../shared/data)")
    return d


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    d = shared_fixtures_dir()
    if not d.is_dir():
        pytest.skip(f"model fixtures not found at {d} (set CTSAM_TEST_FIXTURES to ../shared/fixtures)")
    return d


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
