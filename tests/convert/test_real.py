"""The convert stage on real DICOM from ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctsam.cli import main as cli_main
from ctsam.convert import ConvertOptions, convert_study
from ctsam.errors import DicomSeriesError
from ctsam.io.dicom import read_header
from ctsam.io.image import read_ct, read_image

pytestmark = pytest.mark.shared_data

FAILING = "dicom2nifti_failing"


def dcm2niix_binary() -> Path:
    dcm2niix = pytest.importorskip("dcm2niix", reason="dcm2niix (PyPI wheel, ctsam[dev]) is not installed")
    binary = Path(dcm2niix.__file__).parent / "dcm2niix"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"dcm2niix binary not found at {binary}")
    return binary


def run_dcm2niix(folder: Path, out_dir: Path, *extra: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(dcm2niix_binary()), "-z", "n", "-b", "n", *extra, "-o", str(out_dir), "-f", "d", str(folder)],
        check=True,
        capture_output=True,
    )
    return sorted(out_dir.glob("*.nii"))


def canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Values (after the NIfTI scl_slope/scl_inter, i.e. HU) and affine, in the closest RAS orientation."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float64), img.affine


@pytest.fixture(scope="module")
def example_ct(shared_data, tmp_path_factory) -> tuple[Path, Path, Path]:
    """example_ct_dicom converted once through the CLI: (study, ct.nii.gz, ct.json)."""
    study = shared_data / "totalseg_examples" / "example_ct_dicom"
    tmp = tmp_path_factory.mktemp("example_ct")
    out, side = tmp / "ct.nii.gz", tmp / "ct.json"
    assert cli_main(["convert", str(study), "-o", str(out), "--sidecar", str(side), "-q"]) == 0
    return study, out, side


def test_example_ct_dicom_with_empty_uids_matches_totalsegmentator_grid(shared_data, example_ct):
    study, out, side = example_ct
    ct = read_ct(out)
    assert ct.array.dtype == np.int16
    assert ct.geometry.shape_xyz == (512, 512, 20)
    assert ct.geometry.spacing_xyz_mm == pytest.approx((0.9765625, 0.9765625, 2.0), abs=1e-4)
    _, seg_geometry, _ = read_image(shared_data / "totalseg_examples" / "example_seg_dicom.nii.gz")
    assert ct.geometry.same_space(seg_geometry, tolerance_mm=1e-3), (ct.geometry.describe(), seg_geometry.describe())
    assert np.allclose(ct.geometry.affine_ras(), seg_geometry.affine_ras(), atol=1e-3)
    # HU: slope 1, intercept -1024 applied to the 12-bit stored values
    assert -1024 <= int(ct.array.min()) and int(ct.array.max()) <= 4095 - 1024
    facts = json.loads(side.read_text())
    assert facts["series_instance_uid"] is None  # empty in these files
    assert facts["series_key"].startswith("auto-")
    assert facts["manufacturer"] == "SIEMENS"
    assert facts["convolution_kernel"] == ["Br38f", "3"]
    assert facts["kvp"] == 120.0
    assert facts["slice_thickness_mm"] == 3.0
    assert facts["contrast_bolus_agent"] == "APPLIED"
    assert facts.get("study_date") is None  # dates are dropped by default (privacy.keep_dates)
    assert facts["n_slices"] == 20
    text = side.read_text()
    for not_allowed in ("Petersgraben", "Basel", "PETCT2", "Issuer", "PatientWeight", str(study)):
        assert not_allowed not in text


@pytest.mark.slow
def test_example_ct_dicom_matches_dcm2niix_voxel_for_voxel(example_ct, tmp_path):
    study, out, _ = example_ct
    (ref,) = run_dcm2niix(study, tmp_path / "dcm2niix")
    ours, ours_affine = canonical(out)
    theirs, theirs_affine = canonical(ref)
    assert np.allclose(ours_affine, theirs_affine, atol=1e-3)
    assert np.array_equal(ours, theirs)


@pytest.mark.slow
def test_elastix_thorax141_matches_dcm2niix_voxel_for_voxel(shared_data, tmp_path):
    study = shared_data / "elastix_thorax141"
    res = convert_study(study, tmp_path / "ct.nii.gz", sidecar_path=tmp_path / "ct.json")
    assert res.volume.geometry.shape_xyz == (512, 512, 141)
    (ref,) = run_dcm2niix(study, tmp_path / "dcm2niix")
    ours, ours_affine = canonical(tmp_path / "ct.nii.gz")
    theirs, theirs_affine = canonical(ref)
    assert ours.shape == theirs.shape == (512, 512, 141)
    assert np.allclose(ours_affine, theirs_affine, atol=1e-3)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("case", ["001", "002"])
def test_sliceincrement_exits_2_listing_missing_positions(shared_data, tmp_path, case, capsys):
    study = shared_data / FAILING / "sliceincrement" / case
    assert cli_main(["convert", str(study), "-o", str(tmp_path / "ct.nii.gz")]) == 2
    assert "missing slice positions (LPS mm):" in capsys.readouterr().err
    assert not (tmp_path / "ct.nii.gz").exists()
    with pytest.raises(DicomSeriesError, match="missing slices: 1 slice") as info:
        convert_study(study, None)
    if case == "001":  # z = 18.11, 23.11, 28.11, [33.11 missing], 38.11
        assert "(-123.50, -115.20, 33.11)" in str(info.value)


def test_notavolume_exits_2_naming_the_duplicate_position(shared_data, tmp_path, capsys):
    study = shared_data / FAILING / "notavolume" / "001"
    assert cli_main(["convert", str(study), "-o", str(tmp_path / "ct.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "duplicate position" in err
    assert "not a volume" in err
    assert "(-139.23, -384.23, 61.50)" in err


def test_gantry_tilt_refused_naming_the_angle(shared_data, tmp_path, capsys):
    study = shared_data / FAILING / "gantrytilting" / "001"
    assert cli_main(["convert", str(study), "-o", str(tmp_path / "ct.nii.gz"), "--tilt", "error"]) == 2
    assert "gantry tilt of 14.00 degrees" in capsys.readouterr().err


def test_gantry_tilt_resampled_slices_sit_at_the_dicom_positions(shared_data, tmp_path):
    study = shared_data / FAILING / "gantrytilting" / "001"
    out = tmp_path / "ct.nii.gz"
    # the fixture's pixels are random noise (-1024..-770 HU): widen the input guards' plausibility check
    cfg = tmp_path / "config.yaml"
    cfg.write_text("guards:\n  hu_max_at_least: -2048\n")
    assert cli_main(["--config", str(cfg), "convert", str(study), "-o", str(out), "--tilt", "resample", "-q"]) == 0
    ct = read_ct(out)
    g = ct.geometry
    assert np.allclose(g.direction_matrix.T @ g.direction_matrix, np.eye(3), atol=1e-6)  # orthogonal grid
    files = sorted(study.glob("*.dcm"))
    positions = np.array([read_header(f).ipp_xyz_mm for f in files])
    order = np.argsort(positions[:, 2])
    idx = g.world_to_index(positions[order])
    # slice k of the output is the plane of the k-th DICOM slice, whose first pixel is on column 0
    assert np.allclose(idx[:, 2], np.arange(len(files)), atol=1e-3)
    assert np.allclose(idx[:, 0], 0, atol=1e-3)
    # the slices are 5 mm apart along z, i.e. 5 cos(14 deg) = 4.85 mm along their normal
    assert g.spacing_xyz_mm[2] == pytest.approx(4.8515, abs=1e-3)
    # same grid shape and axes as dcm2niix's own tilt correction (*_Tilt_1.nii)
    refs = run_dcm2niix(study, tmp_path / "dcm2niix")
    (tilt_ref,) = [p for p in refs if "Tilt" in p.name]
    ref_voxels, ref_affine = canonical(tilt_ref)
    ours, ours_affine = canonical(out)
    assert ours.shape == ref_voxels.shape == (512, 521, 4)
    assert np.allclose(ours_affine[:3, :3], ref_affine[:3, :3], atol=1e-3)
    # the slice with the largest in-plane offset needs no interpolation: it is the DICOM slice itself
    facts = json.loads(out.with_name("ct.json").read_text())
    assert facts["gantry_tilt"]["angle_deg"] == pytest.approx(14.0, abs=0.01)
    last = read_header(files[order[-1]])
    from ctsam.io.dicom import read_pixels

    raw = read_pixels(last).astype(np.int32) - 1024
    assert np.array_equal(ct.array[-1][::-1][: raw.shape[0]], raw)


def test_folder_with_several_series_picks_the_ct_volume_and_says_why(shared_data, tmp_path):
    study = tmp_path / "study"
    sources = {
        "abdomen": shared_data / "totalseg_examples" / "example_ct_dicom",  # 20 slices, empty UIDs
        "three": shared_data / "dcmqi_ct3slice",  # 3 CT slices + a DICOM-SEG
        "tilted": shared_data / FAILING / "gantrytilting" / "001",  # 4 slices
    }
    for name, src in sources.items():
        for f in sorted(src.rglob("*")):
            if f.is_file():
                dest = study / name / f.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(f)
    # behaviour changed (issue 19): these are three studies, never ranked as one
    with pytest.raises(DicomSeriesError, match="CT images of 3 studies") as info:
        convert_study(study, None, options=ConvertOptions(tilt="error"))
    assert "(empty StudyInstanceUID) (1 CT series, 20 slices, 7175 days after the earliest)" in info.value.found
    assert "1.2.826.0.1.3680043.8.498.172569766509356512040321084 (1 CT series, 4 slices" in info.value.found
    res = convert_study(
        study, None, sidecar_path=tmp_path / "ct.json", options=ConvertOptions(tilt="error", study_uid="")
    )
    assert res.volume.geometry.shape_xyz == (512, 512, 20)
    facts = json.loads((tmp_path / "ct.json").read_text())
    assert facts["selection"]["chosen"]["n_files"] == 20
    assert "ranked first of 1 eligible CT series" in facts["selection"]["chosen"]["why"]
    assert facts["settings"]["study_uid"] == "given (--study-uid)"
