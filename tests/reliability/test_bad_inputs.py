"""Bad inputs are refused with exit code 2, a message naming the case, the value and the accepted
range, nothing written for the bad case, and a good case beside it left untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ctsam.io.image import read_ct, read_labelmap, write_ct, write_labelmap
from ctsam.volume import CTVolume, Geometry, LabelMap

from .conftest import CASE, ctsam, temp_files, tree_digest


@pytest.fixture
def results(tmp_path, demo_case) -> Path:
    """A results folder holding the finished good case (checked untouched after each test)."""
    res = tmp_path / "results"
    shutil.copytree(demo_case.results, res / CASE)
    before = tree_digest(res / CASE)
    yield res
    assert tree_digest(res / CASE) == before, "a failing case changed another case's outputs"
    assert temp_files(res) == []


def _scaled(g: Geometry, factor: float) -> Geometry:
    return Geometry(
        shape_zyx=g.shape_zyx,
        spacing_xyz_mm=tuple(s * factor for s in g.spacing_xyz_mm),
        origin_xyz_mm=g.origin_xyz_mm,
        direction=g.direction,
    )


def _import(results: Path, tmp_path: Path, array: np.ndarray, geometry: Geometry, case: str):
    src = tmp_path / "in" / f"{case}.nii.gz"
    write_ct(src, CTVolume(array=array, geometry=geometry))
    proc = ctsam("import-ct", src, "-o", results / case / "ct.nii.gz", "--case", case)
    assert not (results / case / "ct.nii.gz").exists() and not (results / case / "ct.json").exists()
    return proc


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_ct_is_refused(results, tmp_path, demo_case, bad):
    ct = read_ct(demo_case.results / "ct.nii.gz")
    arr = ct.array.astype(np.float32)
    arr[:10] = bad
    proc = _import(results, tmp_path, arr, ct.geometry, "bad-nan")
    assert proc.returncode == 2, proc.stderr
    assert "non-finite voxel values [case bad-nan]" in proc.stderr
    assert f"{10 * 128 * 128} of {arr.size} voxels" in proc.stderr and "finite Hounsfield units" in proc.stderr


def test_all_nan_ct_is_refused(results, tmp_path, demo_case):
    ct = read_ct(demo_case.results / "ct.nii.gz")
    proc = _import(results, tmp_path, np.full(ct.array.shape, np.nan, np.float32), ct.geometry, "all-nan")
    assert proc.returncode == 2 and "100%" in proc.stderr and "NaN" in proc.stderr


def test_spacing_1000x_is_refused(results, tmp_path, demo_case):
    ct = read_ct(demo_case.results / "ct.nii.gz")
    proc = _import(results, tmp_path, ct.array, _scaled(ct.geometry, 1000.0), "huge-spacing")
    assert proc.returncode == 2, proc.stderr
    assert "voxel spacing along x is outside the accepted range [case huge-spacing]" in proc.stderr
    assert "906.2 mm" in proc.stderr and "0.05..10 mm" in proc.stderr and "guards.spacing_mm" in proc.stderr


@pytest.mark.parametrize(
    "values, what",
    [
        ((0.0, 1.0), "implausible for a CT"),  # a normalised image
        ((0.0, 4000.0), "implausible for a CT"),  # an MR-like range: no air
        ((-1024.0, -900.0), "implausible for a CT"),  # nothing as dense as soft tissue
        ((-1024.0, 60000.0), "outside the accepted Hounsfield range"),
    ],
)
def test_hu_range_implausible_for_ct_is_refused(results, tmp_path, demo_case, values, what):
    g = read_ct(demo_case.results / "ct.nii.gz").geometry
    arr = np.linspace(*values, num=int(np.prod(g.shape_zyx)), dtype=np.float32).reshape(g.shape_zyx)
    proc = _import(results, tmp_path, arr, g, "odd-hu")
    assert proc.returncode == 2, proc.stderr
    assert what in proc.stderr and "[case odd-hu]" in proc.stderr
    assert f"values {values[0]:g}..{values[1]:g}" in proc.stderr


def test_size_bounds_come_from_config(results, tmp_path, demo_case):
    ct = read_ct(demo_case.results / "ct.nii.gz")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("guards:\n  size_voxels: [3, 64]\n")
    src = tmp_path / "big.nii.gz"
    write_ct(src, ct)
    proc = ctsam("import-ct", src, "-o", results / "too-big" / "ct.nii.gz", "--case", "too-big", "--config", cfg)
    assert proc.returncode == 2, proc.stderr
    assert "image size along x is outside the accepted range [case too-big]" in proc.stderr
    assert "3..64 voxels" in proc.stderr and "128 voxels" in proc.stderr


def test_convert_runs_the_guards_before_writing(results, tmp_path, demo_case):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("guards:\n  spacing_mm: [0.05, 0.5]\n")  # the phantom has 0.9 mm pixels
    out = results / "dicom-case"
    proc = ctsam("convert", demo_case.study, "-o", out / "ct.nii.gz", "--case", "dicom-case", "--config", cfg)
    assert proc.returncode == 2, proc.stderr
    assert "voxel spacing along x is outside the accepted range [case dicom-case]" in proc.stderr
    assert "0.05..0.5 mm" in proc.stderr and not out.exists() or not any(out.iterdir())


def test_seed_caps_prompt_sets(results, tmp_path, demo_case):
    """Spacing 1000x reaching seed (e.g. a CT converted before the guards) no longer tiles without end."""
    ct = read_ct(demo_case.results / "ct.nii.gz")
    lm = read_labelmap(demo_case.results / "coarse.nii.gz")
    g = _scaled(ct.geometry, 1000.0)
    bad = results / "big-seed"
    write_ct(bad / "ct.nii.gz", CTVolume(array=ct.array, geometry=g))
    write_labelmap(bad / "coarse.nii.gz", LabelMap(array=lm.array, geometry=g, labels=lm.labels))
    proc = ctsam("seed", bad / "ct.nii.gz", bad / "coarse.nii.gz", "-o", bad / "prompts.json", "--case", "big-seed")
    assert proc.returncode == 2, proc.stderr
    n_structures = json.loads((demo_case.results / "prompts.json").read_text())
    assert "too many prompt sets for one case [case big-seed]" in proc.stderr
    assert "default 32 per seeded structure" in proc.stderr and "seed.max_prompt_sets" in proc.stderr
    assert not (bad / "prompts.json").exists()
    # the same cap from config, on the good case: the demo needs more than 5 sets
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed:\n  max_prompt_sets: 5\n")
    out = tmp_path / "capped.json"
    proc = ctsam(
        "seed",
        demo_case.results / "ct.nii.gz",
        demo_case.results / "coarse.nii.gz",
        "-o",
        out,
        "--case",
        "capped",
        "--config",
        cfg,
    )
    assert proc.returncode == 2 and "at most 5 prompt sets" in proc.stderr and not out.exists()
    assert n_structures  # the uncapped reference run wrote prompts


def test_empty_labels_are_a_qc_error_and_radiomics_fails(results, tmp_path, demo_case):
    ref = demo_case.results
    lm = read_labelmap(ref / "labels.nii.gz")
    bad = results / "empty"
    bad.mkdir()
    shutil.copy2(ref / "ct.nii.gz", bad / "ct.nii.gz")
    write_labelmap(
        bad / "labels.nii.gz", LabelMap(array=np.zeros_like(lm.array), geometry=lm.geometry, labels=lm.labels)
    )
    proc = ctsam("qc", bad / "ct.nii.gz", bad / "labels.nii.gz", "-o", bad / "qc.json", "--case", "empty")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((bad / "qc.json").read_text())
    assert [f["flag"] for f in doc["case_flags"]] == ["empty_labelmap"]
    assert doc["summary"]["severity"] == "error" and doc["summary"]["flag_counts"]["empty_labelmap"] == 1
    # nearly empty: a few voxels of one structure
    arr = np.zeros_like(lm.array)
    arr[50, 60, 60:63] = 1
    write_labelmap(bad / "few.nii.gz", LabelMap(array=arr, geometry=lm.geometry, labels=lm.labels))
    assert ctsam("qc", bad / "ct.nii.gz", bad / "few.nii.gz", "-o", bad / "qc2.json", "--case", "empty").returncode == 0
    doc2 = json.loads((bad / "qc2.json").read_text())
    assert (
        doc2["case_flags"][0]["flag"] == "empty_labelmap"
        and "nearly empty: 3 labelled voxels" in doc2["case_flags"][0]["message"]
    )
    # the good case has no case-level flag
    assert json.loads((ref / "qc.json").read_text())["case_flags"] == []
    proc = ctsam(
        "radiomics", bad / "ct.nii.gz", bad / "labels.nii.gz", "-o", bad / "radiomics.parquet", "--case", "empty"
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "radiomics extracted no features for this case [case empty]" in proc.stderr and "0 feature rows" in proc.stderr
    )
    assert not (bad / "radiomics.parquet").exists()


def test_structure_missing_after_fusion_is_flagged(results, tmp_path, demo_case):
    """A structure in the coarse map that fusion lost gets the 'lost' error flag."""
    ref = demo_case.results
    lm = read_labelmap(ref / "labels.nii.gz")
    victim = next(i for i in sorted(lm.labels) if np.any(lm.array == i))
    arr = lm.array.copy()
    arr[arr == victim] = 0
    bad = results / "lost"
    write_labelmap(bad / "labels.nii.gz", LabelMap(array=arr, geometry=lm.geometry, labels=lm.labels))
    proc = ctsam(
        "qc",
        ref / "ct.nii.gz",
        bad / "labels.nii.gz",
        "--coarse",
        ref / "coarse.nii.gz",
        "-o",
        bad / "qc.json",
        "--case",
        "lost",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((bad / "qc.json").read_text())
    rec = next(s for s in doc["structures"] if s["name"] == lm.labels[victim])
    assert [f["flag"] for f in rec["flags"]][:1] == ["lost"] and rec["severity"] == "error"


def test_missing_input_file(results, tmp_path):
    proc = ctsam("import-ct", tmp_path / "no-such.nii.gz", "-o", results / "gone" / "ct.nii.gz", "--case", "gone")
    assert proc.returncode == 2, proc.stderr
    assert "[case gone" in proc.stderr and "please report" not in proc.stderr
    proc = ctsam("convert", tmp_path / "no-such-study", "-o", results / "gone" / "ct.nii.gz", "--case", "gone")
    assert proc.returncode == 2 and "please report" not in proc.stderr
