"""Pseudonymous, filesystem-safe case ids.

Case ids name output folders and appear in tables and logs, so they must never carry patient
names and never escape the results folder. Ids come from the sample sheet or folder names, are
restricted to ``[A-Za-z0-9._-]`` (at most 64 characters, no leading dot), and a deterministic
pseudonym (``case-<10 hex>``) is available for sources that may hold PHI.
"""

from __future__ import annotations

import hashlib
import re

from ctsam.errors import ConfigError

_ALLOWED = re.compile(r"[^A-Za-z0-9._-]+")
MAX_LEN = 64


def sanitise_case_id(raw: str) -> str:
    """Map ``raw`` onto ``[A-Za-z0-9._-]{1,64}`` (no leading dot/dash, no '..').

    Raises :class:`ConfigError` if nothing usable is left.
    """
    s = _ALLOWED.sub("_", raw.strip())
    s = s.replace("..", "_").lstrip(".-_")
    s = s[:MAX_LEN].rstrip("._-") or ""
    if not s:
        raise ConfigError(
            "case id is empty after sanitising",
            expected="a case id with letters or digits",
            found=repr(raw),
            fix="give the case a short id of letters, digits, '.', '_' or '-' in the sample sheet",
        )
    return s


def pseudonym(raw: str, *, salt: str = "") -> str:
    """A stable pseudonymous id for ``raw`` (e.g. a folder named after a patient)."""
    digest = hashlib.sha256((salt + "\0" + raw).encode("utf-8")).hexdigest()[:10]
    return f"case-{digest}"
