"""A real Snakemake run over a cohort with one case of each hostile kind: every good case finishes,
each bad one is listed in failures.tsv with its reason, ids map through case_ids.tsv, and no temp
file is left. (The refine stage is left out to keep the run affordable: it has its own workflow
tests; here what matters is what reaches it.)"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ctsam.caseid import safe_case_id
from ctsam.io.image import read_ct, read_labelmap, write_ct, write_labelmap
from ctsam.volume import CTVolume, LabelMap
from tests.workflow.test_workflow import read_tsv, snakemake

from .conftest import temp_files

PERIODIC = "ab" * 40
NON_ASCII = "患者一号"
STAGES = ["convert", "coarse", "fuse", "qc", "radiomics"]


@pytest.mark.workflow
@pytest.mark.slow
def test_hostile_cohort_finishes_good_cases_and_lists_bad_ones(tmp_path, demo_case):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    ct = read_ct(demo_case.results / "ct.nii.gz")
    nan = ct.array.astype(np.float32)
    nan[:] = np.nan
    write_ct(inputs / "nan.nii.gz", CTVolume(array=nan, geometry=ct.geometry))
    lm = read_labelmap(demo_case.labels)
    write_labelmap(
        inputs / "empty.nii.gz", LabelMap(array=np.zeros_like(lm.array), geometry=lm.geometry, labels=lm.labels)
    )
    study, labels = demo_case.study, demo_case.labels
    rows = [
        ("good-1", study, labels),
        (PERIODIC, study, labels),
        (NON_ASCII, study, labels),
        ("nan-ct", inputs / "nan.nii.gz", labels),
        ("empty-labels", study, inputs / "empty.nii.gz"),
        ("missing-file", inputs / "no" / "such" / "study", labels),
    ]
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "case_id\tpath\tcoarse_labels\n" + "".join(f"{c}\t{p}\t{lab}\n" for c, p, lab in rows), encoding="utf-8"
    )
    work = tmp_path / "run"
    proc = snakemake(
        work,
        "--profile",
        "workflow/profiles/local",
        "--cores",
        "2",
        config={"workflow": {"samples": str(sheet), "stages": STAGES}, "coarse": {"backend": "labels"}},
    )
    out = proc.stdout + proc.stderr
    assert "PeriodicWildcardError" not in out and "empty after sanitising" not in out
    assert proc.returncode != 0  # --keep-going: finished, with failures reported
    results = work / "results"
    ids = {raw: safe_case_id(raw) for raw, _, _ in rows}
    mapping = {r["input_id"]: r["case_id"] for r in read_tsv(results / "cohort" / "case_ids.tsv")}
    assert mapping == ids
    assert ids["good-1"] == "good-1" and ids[PERIODIC] != PERIODIC and ids[NON_ASCII].startswith("case-")

    status = {r["case"]: r for r in read_tsv(results / "cohort" / "status.tsv")}
    for good in ("good-1", PERIODIC, NON_ASCII):
        assert status[ids[good]]["status"] == "ok", (good, status[ids[good]])
        assert (results / ids[good] / "radiomics.parquet").exists()
    failures = {r["case"]: r for r in read_tsv(results / "cohort" / "failures.tsv")}
    assert set(failures) == {ids["nan-ct"], ids["empty-labels"], ids["missing-file"]}
    assert failures["nan-ct"]["stage"] == "convert" and "non-finite voxel values" in failures["nan-ct"]["reason"]
    assert failures["missing-file"]["stage"] == "convert"
    assert "<input>" in failures["missing-file"]["reason"] and str(inputs) not in failures["missing-file"]["reason"]
    empty = failures["empty-labels"]
    assert empty["stage"] in ("coarse", "fuse", "radiomics") and empty["reason"], empty
    if empty["stage"] == "radiomics":  # qc ran: the empty map is an error flag there
        assert "no features" in empty["reason"]
        assert "empty_labelmap" in (results / "empty-labels" / "qc.json").read_text()
    assert temp_files(work) == []
    # the good cases' outputs equal a clean single-case run (other cases did not disturb them)
    for name in ("ct.nii.gz", "coarse.nii.gz", "labels.nii.gz"):
        assert (results / "good-1" / name).read_bytes() == (demo_case.results / name).read_bytes(), name
    shutil.rmtree(work / ".snakemake", ignore_errors=True)
