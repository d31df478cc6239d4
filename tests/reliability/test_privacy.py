"""Privacy by default: a study full of synthetic identity (names, ids, dates, UIDs, folder names like
``DOE^JOHN_12345``) run through the workflow (convert -> coarse (labels) -> fuse -> qc -> radiomics
-> manifest under Snakemake, plus seed) leaks none of it into any file under results/, logs included."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tests.workflow.test_workflow import read_tsv, snakemake

from .conftest import ctsam

UID_ROOT = "1.2.826.0.1.3680043.10.999"
IDENTITY = {
    "PatientName": "DOE^JOHN",
    "PatientID": "PID98765",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC55501",
    "InstitutionName": "St Elsewhere Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "StudyID": "STUDY4242",
    "StudyDate": "20240315",
    "SeriesDate": "20240315",
    "AcquisitionDate": "20240315",
    "ContentDate": "20240315",
    "StudyTime": "101112",
}
FOLDER = "DOE^JOHN_12345"


def make_identity_study(src: Path, dest: Path) -> list[str]:
    """Copy a demo DICOM series into ``dest/DOE^JOHN_12345/SER_DOE_JOHN/`` with identity in every
    file and fresh UIDs; returns every identifying string (for the grep)."""
    import pydicom

    series = dest / FOLDER / "SER_DOE_JOHN"
    series.mkdir(parents=True)
    uids = {
        "StudyInstanceUID": f"{UID_ROOT}.1",
        "SeriesInstanceUID": f"{UID_ROOT}.2",
        "FrameOfReferenceUID": f"{UID_ROOT}.3",
    }
    secrets = [*IDENTITY.values(), *uids.values(), FOLDER, "SER_DOE_JOHN", "12345", str(dest)]
    for i, f in enumerate(sorted(src.iterdir()), start=1):
        ds = pydicom.dcmread(f)
        for k, v in {**IDENTITY, **uids}.items():
            setattr(ds, k, v)
        ds.SOPInstanceUID = f"{UID_ROOT}.4.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(series / f"DOE_JOHN_{i:04d}.dcm")
        secrets.append(ds.SOPInstanceUID)
    return secrets


def file_texts(path: Path) -> list[tuple[str, bytes]]:
    """(kind, bytes) to search: the raw bytes, plus the decompressed payload of gzip files."""
    raw = path.read_bytes()
    out = [("raw", raw)]
    if raw[:2] == b"\x1f\x8b":
        out.append(("gunzip", gzip.decompress(raw)))
    return out


def leaks(root: Path, secrets: list[str]) -> list[str]:
    """Every (file, secret) where the secret occurs. Binary payloads (images, parquet) are searched
    for secrets of 8+ characters only (a 3-byte name can occur in compressed data by chance)."""
    found = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        for kind, data in file_texts(p):
            text_like = p.suffix in (".json", ".tsv", ".log", ".yaml", ".txt", ".csv", ".html") and kind == "raw"
            for s in secrets:
                if (text_like or len(s) >= 8) and s.encode() in data:
                    found.append(f"{p.relative_to(root)} ({kind}): {s!r}")
    return found


@pytest.mark.workflow
@pytest.mark.slow
def test_identity_never_reaches_results_or_logs(tmp_path, demo_case):
    studies = tmp_path / "PACS_export_DOE"
    secrets = make_identity_study(demo_case.study, studies) + ["DOE", "JOHN", "Elsewhere", "HOUSE", "PACS_export"]
    labels = studies / FOLDER / "seg_DOE_JOHN.nii.gz"
    shutil.copy2(demo_case.labels, labels)
    shutil.copy2(demo_case.labels.with_suffix("").with_suffix(".tsv"), labels.with_suffix("").with_suffix(".tsv"))
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"case_id\tpath\tcoarse_labels\nsubj01\t{studies / FOLDER}\t{labels}\n")
    work = tmp_path / "run"
    proc = snakemake(
        work,
        "--profile",
        "workflow/profiles/local",
        "--cores",
        "2",
        config={
            "workflow": {"samples": str(sheet), "stages": ["convert", "coarse", "fuse", "qc", "radiomics"]},
            "coarse": {"backend": "labels"},
        },
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = work / "results"
    case = results / "subj01"
    # seed (consumed by refine, which this run leaves out) on the same case, its log beside the others
    seed = ctsam("seed", case / "ct.nii.gz", case / "coarse.nii.gz", "-o", case / "prompts.json", "--case", "subj01")
    assert seed.returncode == 0, seed.stderr
    (case / "logs" / "seed.log").write_text(seed.stderr)
    # the run did read the study (so the grep is meaningful)
    side = json.loads((case / "ct.json").read_text())
    assert side["n_slices"] == 100 and side["study_date"] is None and side["dicom"]["StudyDate"] is None
    assert side["series_instance_uid"].startswith("uid-")
    manifest = json.loads((case / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["input-1"]
    convert_log = (case / "logs" / "convert.log").read_text()
    assert "found 100 DICOM files below <input>" in convert_log and "chosen series <uid>" in convert_log
    assert [r["status"] for r in read_tsv(results / "cohort" / "status.tsv")] == ["ok"]
    assert leaks(results, secrets) == []


def test_switches_keep_dates_shifted_and_uids(tmp_path, demo_case):
    """Teams allowed to: privacy.keep_dates (+ date_shift_days) and keep_uids bring them back."""
    import pydicom

    ds = pydicom.dcmread(next(demo_case.study.iterdir()), stop_before_pixels=True)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("privacy:\n  keep_dates: true\n  date_shift_days: -10\n  keep_uids: true\n")
    proc = ctsam("convert", demo_case.study, "-o", tmp_path / "ct.nii.gz", "--case", "c1", "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["series_instance_uid"] == ds.SeriesInstanceUID and ds.SeriesInstanceUID in proc.stderr
    assert f"below {demo_case.study}" not in proc.stderr  # input paths stay redacted (no switch brings them back)
    assert ds.StudyDate == "20240101" and side["study_date"] == "20231222"  # shifted by -10 days
    plain = ctsam("convert", demo_case.study, "-o", tmp_path / "d" / "ct.nii.gz", "--case", "c1")
    assert plain.returncode == 0 and "below <input>" in plain.stderr and "chosen series <uid>" in plain.stderr
    assert str(demo_case.study) not in plain.stderr and ds.SeriesInstanceUID not in plain.stderr
    default = json.loads((demo_case.results / "ct.json").read_text())
    assert default["study_date"] is None and default["series_instance_uid"] != ds.SeriesInstanceUID
