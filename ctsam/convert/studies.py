"""One study per case: the CT slices of an input must come from one StudyInstanceUID.

Series of two studies (two visits, two patients, a mis-filed export) are never ranked as one study.
When the CT files of an input carry several StudyInstanceUIDs, conversion stops (exit 2) with a
list of the studies (number of CT series and slices, and when they were made relative to the
earliest only: "same day" or "N days later", never a date), unless ``study_uid``
(``--study-uid``) says which one to convert. Files of other modalities never make a study count
(an RT structure set or report of another study is only ignored). An empty StudyInstanceUID
counts as a study of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from ctsam.errors import DicomSeriesError
from ctsam.io.dicom import DicomHeader

log = logging.getLogger(__name__)


def choose_study(headers: list[DicomHeader], study_uid: str | None = None) -> list[DicomHeader]:
    """The headers of the one study to convert (all of them when there is only one).

    Raises:
        DicomSeriesError: several studies hold CT images and ``study_uid`` is None, or ``study_uid``
            is not one of the input's studies.
    """
    studies: dict[str, list[DicomHeader]] = defaultdict(list)
    for h in headers:
        studies[h.study_uid].append(h)
    ct_studies = {uid: hs for uid, hs in studies.items() if any(h.modality == "CT" for h in hs)}
    if study_uid is not None:
        if study_uid not in studies:
            raise DicomSeriesError(
                "the study asked for with --study-uid is not in the input",
                expected="one of: " + describe_studies(ct_studies or studies),
                found=study_uid,
                fix="pass one of the StudyInstanceUIDs listed above",
            )
        others = len(headers) - len(studies[study_uid])
        if others:
            log.info("--study-uid: ignoring %d file(s) of %d other stud(ies)", others, len(studies) - 1)
        return studies[study_uid]
    if len(ct_studies) > 1:
        raise DicomSeriesError(
            f"the input holds CT images of {len(ct_studies)} studies; ctsam converts one study per case",
            expected="the CT series of one StudyInstanceUID",
            found=describe_studies(ct_studies),
            fix="pass --study-uid UID to convert one of them, or put each study in its own folder (one case each)",
        )
    return headers


def describe_studies(studies: dict[str, list[DicomHeader]]) -> str:
    """``UID (N CT series, M slices, same day as the earliest); ...`` -- dates only relative."""
    dates = {uid: _study_date(hs) for uid, hs in studies.items()}
    known = [d for d in dates.values() if d is not None]
    earliest = min(known) if known else None
    order = sorted(studies, key=lambda u: (dates[u] is None, dates[u] or dt.date.min, u))
    parts = []
    for i, uid in enumerate(order):
        hs = studies[uid]
        ct = [h for h in hs if h.modality == "CT"]
        n_series = len({h.series_uid for h in ct})
        date = dates[uid]
        if date is None or earliest is None:
            when = "date unknown"
        elif i == 0 or date == earliest:
            when = "same day as the earliest" if i else "earliest"
        else:
            when = f"{(date - earliest).days} days after the earliest"
        label = uid or "(empty StudyInstanceUID)"
        parts.append(f"{label} ({n_series} CT series, {len(ct)} slices, {when})")
    return "; ".join(parts)


def _study_date(headers: list[DicomHeader]) -> dt.date | None:
    for h in headers:
        value = h.acquisition.get("StudyDate") or h.acquisition.get("SeriesDate")
        if isinstance(value, str) and len(value) >= 8 and value[:8].isdigit():
            try:
                return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
            except ValueError:
                continue
    return None
