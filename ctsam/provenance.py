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


def sha256_dir(path: Path) -> tuple[str, int, int]:
    """Digest of a folder: sha256 over (relative path, file sha256) of every file, sorted.

    Returns ``(hexdigest, n_files, total_bytes)``.
    """
    h = hashlib.sha256()
    n = size = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            rel = f.relative_to(path).as_posix()
            h.update(rel.encode("utf-8") + b"\0" + sha256_file(f).encode() + b"\n")
            n += 1
            size += f.stat().st_size
    return h.hexdigest(), n, size


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
