"""Pseudonymous, filesystem-safe case ids.

Case ids name output folders and appear in tables and logs, so they must never carry patient
names and never escape the results folder. Ids come from the sample sheet or folder names, are
restricted to ``[A-Za-z0-9._-]`` (at most 64 characters, no leading dot), and a deterministic
pseudonym (``case-<10 hex>``) is available for sources that may hold PHI.

:func:`safe_case_id` accepts *any* input id: a safe id is kept as it is; any other (spaces,
slashes, non-ASCII, too long, or periodic -- which Snakemake would refuse with a
``PeriodicWildcardError``) becomes ``<sanitised stem>-<8 hex of sha256(input id)>``, or
``case-<10 hex>`` when nothing of it is usable, so two different inputs never share an id. The
workflow records every mapping in ``results/cohort/case_ids.tsv``.
"""

from __future__ import annotations

import hashlib
import re

from ctsam.errors import ConfigError

_ALLOWED = re.compile(r"[^A-Za-z0-9._-]+")
MAX_LEN = 64
#: what a safe id looks like (the workflow's wildcard constraint)
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Snakemake refuses wildcard values ending in >= 20 repetitions of one substring (PeriodicityDetector);
# ids ending in 10 or more repetitions are remapped, well before that
_PERIODIC_TAIL = re.compile(r"(.+?)\1{9,}$")


def is_safe_case_id(raw: str) -> bool:
    """True when ``raw`` can name a results folder and a Snakemake wildcard as it is."""
    return (
        SAFE_ID.fullmatch(raw) is not None
        and ".." not in raw
        and not raw.endswith((".", "-", "_"))
        and _PERIODIC_TAIL.search(raw) is None
    )


def safe_case_id(raw: str) -> str:
    """The case id used for ``raw`` (any string): ``raw`` itself when safe, else a safe id with a
    hash of ``raw`` (see the module docstring). Deterministic; never raises."""
    if is_safe_case_id(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    stem = _ALLOWED.sub("_", raw.strip()).replace("..", "_").lstrip(".-_")
    stem = _PERIODIC_TAIL.sub(lambda m: m.group(1), stem)  # one period of a periodic tail
    stem = stem[:48].rstrip("._-")
    if not stem or not any(c.isalnum() for c in stem):
        return f"case-{digest[:10]}"
    return f"{stem}-{digest[:8]}"


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
