"""Privacy by default: what of the input study may reach ``results/`` and logs.

Config section ``privacy`` (all off by default):

* ``keep_dates`` -- keep StudyDate/SeriesDate/AcquisitionDate (and any other ``*Date``/``*_date``
  field) in sidecars; default: dropped (``null``). With ``date_shift_days`` kept dates are shifted
  by that many days (one shift for the whole cohort keeps intervals between studies).
* ``keep_uids`` -- keep DICOM UIDs in sidecars and logs; default: each UID is replaced by a salted,
  deterministic pseudonym ``uid-<16 hex>`` (``uid_salt``), so the same series always gets the
  same pseudonym and nothing leads back to the archive without the salt.
* ``keep_input_names`` -- name inputs in ``manifest.json`` by their file or folder name; default:
  ``input-1``, ``input-2`` ... (study folders are often named after patients).

Names, patient ids, birth dates, accession numbers and paths never reach a sidecar in the first
place (the convert stage copies an allow-list of acquisition tags only); this module handles what
the allow-list must keep for provenance (dates, UIDs) and the names of inputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

#: a DICOM UID (digits in at least 5 dot-separated components), anywhere in a string
UID_PATTERN = re.compile(r"(?<![\w.])[0-2](?:\.\d+){4,}(?![\w.])")
_DATE_KEY = re.compile(r"(Date|_date)$")
_DICOM_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class PrivacySettings:
    """The ``privacy`` config section."""

    keep_dates: bool = False
    date_shift_days: int = 0
    keep_uids: bool = False
    uid_salt: str = ""
    keep_input_names: bool = False

    @classmethod
    def from_config(cls, config: dict) -> PrivacySettings:
        p = config.get("privacy") or {}
        return cls(**{k: p[k] for k in cls.__dataclass_fields__ if k in p})


def uid_pseudonym(uid: str, salt: str = "") -> str:
    """A stable pseudonym for a DICOM UID: ``uid-<16 hex>`` of sha256(salt, uid)."""
    return "uid-" + hashlib.sha256(f"{salt}\0{uid}".encode()).hexdigest()[:16]


def shift_date(value: str, days: int) -> str:
    """Shift a DICOM date ``YYYYMMDD`` by ``days`` (other strings are returned unchanged)."""
    if not days or not _DICOM_DATE.match(value):
        return value
    try:
        d = dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return value
    return (d + dt.timedelta(days=days)).strftime("%Y%m%d")


def scrub(obj: Any, settings: PrivacySettings) -> Any:
    """A copy of a JSON-like document with dates dropped/shifted and UIDs pseudonymised per ``settings``."""

    def value(v: Any, key: str | None) -> Any:
        if key is not None and v is not None and _DATE_KEY.search(key):
            if not settings.keep_dates:
                return None
            return walk(v, None, shift=True)
        return walk(v, key)

    def walk(v: Any, key: str | None, shift: bool = False) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, k, shift) if shift else value(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, key, shift) for x in v]
        if isinstance(v, str):
            if shift:
                v = shift_date(v, settings.date_shift_days)
            if not settings.keep_uids:
                v = UID_PATTERN.sub(lambda m: uid_pseudonym(m.group(0), settings.uid_salt), v)
            return v
        return v

    return walk(obj, None)


def input_names(paths: list[str], settings: PrivacySettings) -> list[str | None]:
    """Display names of a case's inputs: None (use the file name) with ``keep_input_names``, else
    ``input-1``, ``input-2`` ... in the given order."""
    if settings.keep_input_names:
        return [None] * len(paths)
    return [f"input-{i}" for i in range(1, len(paths) + 1)]
