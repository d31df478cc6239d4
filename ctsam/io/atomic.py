"""Atomic file writes: write to a temporary file in the target folder, then rename.

A crash or a failing case never leaves a half-written output that Snakemake (or a person)
could mistake for a finished one.

Temporary files sit next to their output with a recognisable name,
``.<output name>.ctsam-tmp.<host>.<pid>.<random><suffixes>`` (e.g.
``.ct.nii.gz.ctsam-tmp.node1.4711.k2j4.nii.gz``). They are removed when the write fails, when the
process gets SIGTERM (:func:`install_sigterm_cleanup`, called by the CLI), and -- after a
``kill -9`` or a power cut, where nothing can run -- by the next write into that folder
(:func:`remove_stale_temps`: files of processes that no longer run on this host, or, for files
written on another host, untouched for :data:`FOREIGN_STALE_S` seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctsam.errors import environment_fault, is_environment_error

TEMP_MARKER = ".ctsam-tmp."
FOREIGN_STALE_S = 6 * 3600.0
_TEMP_RE = re.compile(r"^\.(?P<dest>.+)\.ctsam-tmp\.(?P<host>[A-Za-z0-9-]*)\.(?P<pid>\d+)\.[a-z0-9]+")
_LIVE: set[Path] = set()  # temp files of this process (removed on SIGTERM)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname().split(".")[0])[:24]


def temp_name(dest: Path) -> str:
    """The temporary file name used while writing ``dest`` (see the module docstring)."""
    return f".{dest.name}{TEMP_MARKER}{_host()}.{os.getpid()}.{secrets.token_hex(3)}{_suffixes(dest)}"


def temp_target(path: str | os.PathLike[str]) -> Path | None:
    """The output a ctsam temporary file was being written for (None if ``path`` is not one)."""
    p = Path(path)
    m = _TEMP_RE.match(p.name)
    return p.with_name(m.group("dest")) if m else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str], *, dest_name: str | None = None) -> list[Path]:
    """Delete temporary files left in ``folder`` by writers that died (``kill -9``, node crash).

    A file is stale when its process no longer runs on this host, or it was written on another
    host and is older than :data:`FOREIGN_STALE_S`. ``dest_name`` limits the sweep to one output.
    Returns the removed paths.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, now = _host(), time.time()
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or (dest_name is not None and m.group("dest") != dest_name):
            continue
        pid = int(m.group("pid"))
        if m.group("host") == host:
            stale = pid != os.getpid() and not _pid_alive(pid)
        else:
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > FOREIGN_STALE_S
            except OSError:
                continue
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that ``finally``/cleanup code runs."""


def install_sigterm_cleanup() -> None:
    """On SIGTERM raise :class:`Terminated` (cleaning up temp files as the stack unwinds).

    Also removes any temp file of this process still registered, in case the signal arrives
    outside a write. Only callable from the main thread (the CLI calls it).
    """

    def handler(signum: int, frame: Any) -> None:
        for p in list(_LIVE):
            with contextlib.suppress(OSError):
                p.unlink()
        raise Terminated(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _suffixes(path: Path) -> str:
    # keep multi-part suffixes such as .nii.gz so writers that dispatch on the name still work
    return "".join(path.suffixes[-2:]) if path.name.endswith((".nii.gz", ".tar.gz")) else path.suffix


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    On an exception the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest.parent, dest_name=dest.name)
        tmp_path = dest.parent / temp_name(dest)
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError as err:
        if is_environment_error(err):
            raise environment_fault(err, dest) from err
        raise
    _LIVE.add(tmp_path)
    try:
        yield tmp_path
        # the temp file was created 0600; give the result the usual permissions (0666 minus umask)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if is_environment_error(err):
            raise environment_fault(err, dest) from err  # type: ignore[arg-type]
        raise
    finally:
        _LIVE.discard(tmp_path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys in insertion order, NaN written as null)."""
    atomic_write_text(dest, json.dumps(_nan_to_none(obj), indent=2, allow_nan=False) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:  # NaN
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
