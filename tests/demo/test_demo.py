"""The synthetic demo cohort: phantoms, DICOM series, coarse labels, determinism, the corrupt case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctsam.demo.cohort import case_ids, case_paths, corrupt_case_id, write_cohort
from ctsam.demo.phantom import draw_spec, imitate_coarse, make_phantom
from ctsam.demo.structures import ORGANS, RIBS, VERTEBRAE, label_table
from ctsam.errors import ConfigError
from ctsam.io.image import read_labelmap
from ctsam.volume import Geometry

REQUIRED = [
    "liver",
    "spleen",
    "kidney_left",
    "kidney_right",
    "aorta",
    "heart",
    "urinary_bladder",
    "stomach",
    "lung_upper_lobe_left",
    "lung_lower_lobe_right",
    "vertebrae_L1",
    "vertebrae_T12",
    "rib_left_5",
    "rib_right_5",
]


@pytest.fixture(scope="module")
def phantom():
    rng = np.random.default_rng([0, 1])
    return make_phantom(draw_spec(rng), rng)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    write_cohort(d, n_cases=2, seed=7, corrupt_case=True)
    return d


def test_label_table_uses_totalsegmentator_ids():
    table = label_table()
    assert table[1] == "spleen" and table[5] == "liver" and table[21] == "urinary_bladder"
    assert table[31] == "vertebrae_L1" and table[32] == "vertebrae_T12" and table[44] == "vertebrae_C7"
    assert table[92] == "rib_left_1" and table[115] == "rib_right_12" and table[51] == "heart" and table[52] == "aorta"
    assert len(RIBS) == 24 and len(VERTEBRAE) == 18


def test_label_table_matches_ctsam_labels_catalogue():
    labels = pytest.importorskip("ctsam.labels", reason="ctsam.labels (coarse stage) not merged yet")
    catalogue = labels.ts_total_labels()  # TotalSegmentator v2 'total': {id: name}
    for idx, name in label_table().items():
        assert catalogue[idx] == name


def test_phantom_has_required_structures_with_plausible_hu(phantom):
    names = {v: k for k, v in label_table().items()}
    present = {label_table()[i] for i in phantom.truth.present_labels()}
    assert set(REQUIRED) <= present
    ct = phantom.ct.array
    assert ct.dtype == np.int16
    median = {
        n: float(np.median(ct[phantom.truth.array == names[n]]))
        for n in ("liver", "lung_upper_lobe_left", "vertebrae_L1", "rib_left_5")
    }
    assert 30 < median["liver"] < 100
    assert -950 < median["lung_upper_lobe_left"] < -750
    assert 200 < median["vertebrae_L1"] < 450
    assert median["rib_left_5"] > 300
    assert ct.min() >= -1024 and float(np.median(ct[phantom.truth.array == 0][:1000])) < -900  # air outside


def test_phantom_geometry_is_anisotropic_and_small(phantom):
    sx, sy, sz = phantom.ct.geometry.spacing_xyz_mm
    assert sx == sy and sz > 2 * sx
    assert phantom.ct.array.size < 2.5e6


def test_left_structures_are_on_patient_left(phantom):
    """LPS: +x is the patient's left, so left kidney voxels have larger x than right kidney voxels."""
    g = phantom.truth.geometry
    cx = {}
    for name in ("kidney_left", "kidney_right", "spleen", "liver"):
        z, y, x = np.nonzero(phantom.truth.array == ORGANS[name])
        cx[name] = g.index_to_world(np.array([[x.mean(), y.mean(), z.mean()]]))[0][0]
    assert cx["kidney_left"] > 0 > cx["kidney_right"]
    assert cx["spleen"] > 0 > cx["liver"]


def test_coarse_imitates_a_3mm_segmenter(phantom):
    truth, coarse = phantom.truth.array, phantom.coarse.array
    liver = ORGANS["liver"]
    a, b = truth == liver, coarse == liver
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert 0.8 < dice < 0.99  # close, not equal
    assert len(phantom.coarse_errors) == 3
    missed = phantom.coarse_errors[0].split()[-1]
    assert not (coarse == label_table_index(missed)).any()


def label_table_index(name: str) -> int:
    return {v: k for k, v in label_table().items()}[name]


def test_imitate_coarse_is_blocky():
    g = Geometry(shape_zyx=(4, 6, 6), spacing_xyz_mm=(1.0, 1.0, 3.0), origin_xyz_mm=(0, 0, 0))
    truth = np.arange(4 * 6 * 6, dtype=np.int32).reshape(4, 6, 6)
    coarse = imitate_coarse(truth, g, 3.0)
    # x/y: blocks of 3 voxels share one value; z already at 3 mm is unchanged per slice
    assert (coarse[:, :, 0] == coarse[:, :, 2]).all() and (coarse[:, 0, :] == coarse[:, 2, :]).all()
    assert len(np.unique(coarse[0])) == 4


def test_cohort_layout_and_samples(cohort):
    lines = (cohort / "samples.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["case_id", "path", "coarse_labels", "truth_labels"]
    assert [line.split("\t")[0] for line in lines[1:]] == case_ids(2) == ["demo-001", "demo-002"]
    for c in case_ids(2):
        p = case_paths(cohort, c)
        assert p.dicom_dir.is_dir() and p.truth.exists() and p.coarse.exists() and p.meta.exists()
        lm = read_labelmap(p.coarse)
        assert lm.labels[5] == "liver"


def test_dicom_series_roundtrip(cohort):
    import pydicom

    from ctsam.io.image import read_labelmap

    p = case_paths(cohort, "demo-001")
    files = sorted(p.dicom_dir.glob("*.dcm"))
    truth = read_labelmap(p.truth)
    assert len(files) == truth.geometry.shape_zyx[0]
    ds = pydicom.dcmread(files[3])
    assert ds.Modality == "CT" and ds.PixelRepresentation == 1 and float(ds.RescaleIntercept) == -1024
    assert "PatientBirthDate" not in ds and ds.PatientID == "demo-001"
    hu = ds.pixel_array.astype(np.int32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.shape == truth.geometry.shape_zyx[1:]
    # the label maps use ctsam convert's grid (rows bottom-up): DICOM row 0 is label-map row ny-1
    ny = truth.geometry.shape_zyx[1]
    assert np.allclose(
        [float(v) for v in ds.ImagePositionPatient], truth.geometry.index_to_world([0, ny - 1, 3]), atol=1e-3
    )
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx(list(truth.geometry.spacing_xyz_mm[:2][::-1]))
    # same voxels: bone in the labels is bright in the DICOM pixels at the mirrored row
    k = truth.geometry.shape_zyx[0] // 2
    ds = pydicom.dcmread(files[k])
    hu = ds.pixel_array.astype(np.int32) - 1024
    bone = np.isin(truth.array[k, ::-1, :], [i for i, n in truth.labels.items() if n.startswith("vertebrae")])
    assert bone.any() and np.median(hu[bone]) > 200 and np.median(hu[~bone]) < 100


def test_corrupt_case_misses_slices(cohort):
    bad = case_paths(cohort, corrupt_case_id(2))
    meta = json.loads(bad.meta.read_text())
    assert meta["corrupt"] and "missing" in meta["corrupt"]
    n = read_labelmap(bad.truth).geometry.shape_zyx[0]
    assert len(list(bad.dicom_dir.glob("*.dcm"))) == n - 2
    good = case_paths(cohort, "demo-001")
    assert json.loads(good.meta.read_text())["corrupt"] is None


def test_same_seed_same_bytes_and_cases_vary(tmp_path, cohort):
    write_cohort(tmp_path, n_cases=2, seed=7, corrupt_case=True, only=["demo-001"])
    a, b = case_paths(cohort, "demo-001"), case_paths(tmp_path, "demo-001")
    assert a.coarse.read_bytes() == b.coarse.read_bytes()
    for f in sorted(a.dicom_dir.glob("*.dcm"))[:5]:
        assert f.read_bytes() == (b.dicom_dir / f.name).read_bytes()
    assert not (tmp_path / "samples.tsv").exists()  # --only writes no sheet
    m1 = json.loads(a.meta.read_text())
    m2 = json.loads(case_paths(cohort, "demo-002").meta.read_text())
    assert m1["geometry_dicom"] != m2["geometry_dicom"]


def test_unknown_only_case_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown demo case"):
        write_cohort(tmp_path, n_cases=2, only=["demo-009"])


def test_cli_demo_cohort(tmp_path):
    from ctsam.cli import main

    assert main(["demo-cohort", str(tmp_path), "--cases", "1", "--seed", "3"]) == 0
    assert (tmp_path / "demo-001" / "coarse.nii.gz").exists() and (tmp_path / "samples.tsv").exists()
    assert main(["demo-cohort", str(tmp_path), "--cases", "0"]) == 2
