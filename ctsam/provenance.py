"""Provenance helpers: file hashes, software versions, config digests."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(paths: list[Path]) -> str:
    """One digest over several files (sorted by path; names and contents both count)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def config_digest(config: Any) -> str:
    """sha256 of the canonical JSON form of a config mapping."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def package_versions(names: tuple[str, ...] = ("ctsam", "numpy", "SimpleITK", "pydicom", "nibabel", "torch")) -> dict:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
