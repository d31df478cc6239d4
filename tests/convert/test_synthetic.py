"""The convert stage on tiny synthetic DICOM series written by the tests (16x16 pixels, few slices)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pydicom
import pytest

from ctsam.cli import main as cli_main
from ctsam.convert import ConvertOptions, convert_study
from ctsam.errors import ConfigError, DicomSeriesError
from ctsam.io.image import read_ct
from tests.convert.synthetic import tilted_orientation, write_series


def _world_of_dicom_pixels(series, k: int, rows: int, cols: int, iop, spacing) -> np.ndarray:
    """LPS positions of every pixel (j, i) of DICOM slice k, shape (rows, cols, 3)."""
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    j, i = np.mgrid[0:rows, 0:cols]
    return series.positions_mm[k] + i[..., None] * spacing[1] * r + j[..., None] * spacing[0] * c


def test_clean_series_roundtrip_values_and_geometry(tmp_path):
    s = write_series(tmp_path / "study", n_slices=6)
    out = tmp_path / "ct.nii.gz"
    res = convert_study(tmp_path / "study", out, sidecar_path=tmp_path / "ct.json")
    vol = read_ct(out)
    assert vol.array.dtype == np.int16
    assert vol.geometry.shape_zyx == (6, 16, 16)
    assert vol.geometry.spacing_xyz_mm == pytest.approx((0.7, 0.8, 2.5))
    # values: rows are stored bottom-up (dcm2niix convention), so NIfTI row y is DICOM row 15 - y
    assert np.array_equal(vol.array, s.hu_zyx[:, ::-1, :])
    # geometry: the world position of voxel (i, 15 - j, k) is DICOM pixel (j, i) of slice k
    world = _world_of_dicom_pixels(s, 3, 16, 16, (1, 0, 0, 0, 1, 0), (0.8, 0.7))
    j, i = np.mgrid[0:16, 0:16]
    idx = np.stack([i, 15 - j, np.full_like(i, 3)], axis=-1)
    assert np.allclose(vol.geometry.index_to_world(idx), world, atol=1e-4)
    assert res.selection.chosen.key == s.series_uid


def test_oblique_coronal_series_geometry(tmp_path):
    a = np.deg2rad(20)
    iop = (np.cos(a), np.sin(a), 0.0, 0.0, 0.0, -1.0)  # coronal, rotated 20 degrees about z
    s = write_series(tmp_path / "study", n_slices=4, iop=iop, origin_mm=(5.0, 7.0, 100.0))
    res = convert_study(tmp_path / "study", None)
    g = res.volume.geometry
    world = _world_of_dicom_pixels(s, 2, 16, 16, iop, (0.8, 0.7))
    j, i = np.mgrid[0:16, 0:16]
    idx = np.stack([i, 15 - j, np.full_like(i, 2)], axis=-1)
    assert np.allclose(g.index_to_world(idx), world, atol=1e-4)
    assert np.array_equal(res.volume.array, s.hu_zyx[:, ::-1, :])


def test_shuffled_file_names_and_nested_folders_are_sorted_by_position(tmp_path):
    s = write_series(tmp_path / "tmp", n_slices=6)
    order = [4, 0, 5, 2, 1, 3]
    for n, k in enumerate(order):  # file names no longer follow the slice order
        dest = tmp_path / "study" / f"sub{n % 2}" / f"IM{n:02d}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(s.paths[k], dest)
    res = convert_study(tmp_path / "study", None)
    assert np.array_equal(res.volume.array, s.hu_zyx[:, ::-1, :])
    assert np.allclose(res.stack.positions_mm(), s.positions_mm)


def test_slices_stacked_against_the_normal_are_reordered(tmp_path):
    s = write_series(tmp_path / "study", n_slices=5, stack_vector_mm=(0, 0, -3.0))
    res = convert_study(tmp_path / "study", None)
    assert res.volume.geometry.spacing_xyz_mm[2] == pytest.approx(3.0)
    assert np.array_equal(res.volume.array, s.hu_zyx[::-1, ::-1, :])
    assert res.volume.geometry.origin_xyz_mm[2] == pytest.approx(s.positions_mm[-1, 2])


def test_missing_slice_lists_the_missing_position(tmp_path):
    s = write_series(tmp_path / "study", n_slices=6)
    s.paths[2].unlink()
    with pytest.raises(DicomSeriesError, match="missing slices") as info:
        convert_study(tmp_path / "study", None)
    expected = s.positions_mm[2]
    assert f"({expected[0]:.2f}, {expected[1]:.2f}, {expected[2]:.2f})" in str(info.value)
    assert "missing slice positions" in str(info.value)


def test_two_missing_slices_in_one_gap_are_both_listed(tmp_path):
    s = write_series(tmp_path / "study", n_slices=7)
    s.paths[2].unlink()
    s.paths[3].unlink()
    with pytest.raises(DicomSeriesError, match="2 slice\\(s\\) absent") as info:
        convert_study(tmp_path / "study", None)
    for k in (2, 3):
        assert f"{s.positions_mm[k][2]:.2f})" in str(info.value)


def test_irregular_spacing_is_an_error(tmp_path):
    pos = np.array([[0, 0, z] for z in (0.0, 2.5, 5.0, 6.3, 8.8)])
    write_series(tmp_path / "study", positions_mm=pos)
    with pytest.raises(DicomSeriesError, match="not uniform"):
        convert_study(tmp_path / "study", None)


def test_spacing_within_tolerance_is_accepted(tmp_path):
    pos = np.array([[0, 0, z] for z in (0.0, 2.5, 5.03, 7.5, 10.0)])
    write_series(tmp_path / "study", positions_mm=pos)
    res = convert_study(tmp_path / "study", None)
    assert res.stack.step_mm == pytest.approx(2.5)
    with pytest.raises(DicomSeriesError, match="not uniform"):
        convert_study(tmp_path / "study", None, options=ConvertOptions(spacing_tolerance_mm=0.01))


def test_duplicate_position_is_an_error(tmp_path):
    pos = np.array([[0, 0, z] for z in (0.0, 2.5, 2.5, 5.0, 7.5)])
    write_series(tmp_path / "study", positions_mm=pos)
    with pytest.raises(DicomSeriesError, match="duplicate slice positions") as info:
        convert_study(tmp_path / "study", None)
    assert "duplicate position: 2 slices at position (0.00, 0.00, 2.50)" in str(info.value)


def test_exact_copies_of_an_instance_are_not_duplicates(tmp_path, caplog):
    s = write_series(tmp_path / "study", n_slices=4)
    shutil.copy(s.paths[1], tmp_path / "study" / "copy_of_1.dcm")
    with caplog.at_level(logging.WARNING):
        res = convert_study(tmp_path / "study", None)
    assert res.stack.n_slices == 4
    assert "copy" in caplog.text


def test_all_slices_at_one_position_is_not_a_volume(tmp_path):
    write_series(tmp_path / "study", positions_mm=np.zeros((4, 3)))
    with pytest.raises(DicomSeriesError, match="not a volume") as info:
        convert_study(tmp_path / "study", None)
    assert "duplicate position" in str(info.value)


def test_too_few_slices_is_not_a_volume(tmp_path):
    write_series(tmp_path / "study", n_slices=2)
    with pytest.raises(DicomSeriesError, match="no usable CT series") as info:
        convert_study(tmp_path / "study", None)
    assert "not a volume" in str(info.value)


def test_inconsistent_orientation_is_an_error(tmp_path):
    # a deviation beyond orientation_tolerance (0.001) but too small to be another stack (0.01):
    # (a slice at a clearly different orientation is a stack of its own: tests/convert/test_stacks.py)
    s = write_series(tmp_path / "study", n_slices=4)
    ds = pydicom.dcmread(s.paths[3])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.99998, -0.005]
    ds.save_as(s.paths[3])
    with pytest.raises(DicomSeriesError, match="different orientations"):
        convert_study(tmp_path / "study", None)


# ------------------------------------------------------------------ gantry tilt
def _tilted_series(folder, tilt_deg=30.0, n_slices=5):
    # slices tilted about x; the table moves 2 mm along z per slice, so each slice is shifted
    # in-plane by 2 sin(30) = 1 mm = exactly 1 pixel (spacing 1 mm) relative to its neighbour
    return write_series(
        folder,
        n_slices=n_slices,
        pixel_spacing_mm=(1.0, 1.0),
        iop=tilted_orientation(tilt_deg),
        stack_vector_mm=(0.0, 0.0, 2.0),
    )


def test_tilt_is_refused_by_default_naming_the_angle(tmp_path):
    _tilted_series(tmp_path / "study")
    with pytest.raises(DicomSeriesError, match="gantry tilt of 30.00 degrees") as info:
        convert_study(tmp_path / "study", None)
    assert "--tilt resample" in str(info.value)


def test_tilt_below_tolerance_is_ignored(tmp_path):
    write_series(tmp_path / "study", n_slices=4, iop=tilted_orientation(0.05), stack_vector_mm=(0, 0, 2.0))
    res = convert_study(tmp_path / "study", None)
    assert not res.stack.tilted and res.stack.tilt_deg == pytest.approx(0.05, abs=1e-3)


def test_tilt_resample_gives_orthogonal_grid_with_dicom_slice_positions(tmp_path):
    s = _tilted_series(tmp_path / "study")
    res = convert_study(tmp_path / "study", None, options=ConvertOptions(tilt="resample"))
    g = res.volume.geometry
    d = g.direction_matrix
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-9)  # orthonormal axes
    assert res.stack.tilted and res.stack.tilt_deg == pytest.approx(30.0)
    # true slice distance along the normal: 2 mm * cos(30)
    assert g.spacing_xyz_mm[2] == pytest.approx(2.0 * np.cos(np.deg2rad(30)))
    # the grid grows by 4 rows (4 one-pixel shifts); columns unchanged
    assert g.shape_zyx == (5, 20, 16)
    # slice k of the output is the plane of DICOM slice k: its position maps to index z == k
    idx = g.world_to_index(s.positions_mm)
    assert np.allclose(idx[:, 2], np.arange(5), atol=1e-6)
    assert np.allclose(idx[:, 0], 0, atol=1e-6)
    # every DICOM pixel lands on a voxel at its own world position with its own value (integer shifts)
    for k in range(5):
        world = _world_of_dicom_pixels(s, k, 16, 16, tilted_orientation(30.0), (1.0, 1.0))
        vox = np.rint(g.world_to_index(world.reshape(-1, 3))).astype(int)
        assert np.allclose(g.index_to_world(vox), world.reshape(-1, 3), atol=1e-4)
        values = res.volume.array[vox[:, 2], vox[:, 1], vox[:, 0]]
        assert np.array_equal(values, s.hu_zyx[k].reshape(-1))
    # voxels no slice covers get the lowest HU of the series
    assert res.report.fill_hu == int(s.hu_zyx.min())
    assert res.report.padded_voxels == 5 * 4 * 16
    assert res.sidecar["gantry_tilt"]["angle_deg"] == pytest.approx(30.0)
    assert res.sidecar["gantry_tilt"]["resampled"] is True


def test_tilt_resample_with_fractional_shift_interpolates_within_the_plane(tmp_path):
    s = write_series(
        tmp_path / "study",
        n_slices=3,
        pixel_spacing_mm=(1.0, 1.0),
        iop=tilted_orientation(14.0),
        stack_vector_mm=(0.0, 0.0, 5.0),
    )
    res = convert_study(tmp_path / "study", None, options=ConvertOptions(tilt="resample"))
    g = res.volume.geometry
    shift = 5.0 * np.sin(np.deg2rad(14.0))  # 1.21 pixels per slice
    assert g.shape_zyx == (3, 16 + int(np.ceil(2 * shift)), 16)
    # the last slice has the largest offset along -c, so it needs no interpolation: exact copy
    last = res.volume.array[2][::-1]  # back to DICOM row order
    assert np.array_equal(last[:16], s.hu_zyx[2])
    # the first slice is shifted by 2 * 1.21 px: linear interpolation between neighbouring rows
    first = res.volume.array[0][::-1].astype(float)
    frac = 2 * shift - 2
    expected_row5 = (1 - frac) * s.hu_zyx[0][3] + frac * s.hu_zyx[0][2]
    row = 5  # output row 5 samples DICOM row 5 - 2.42 = 2.58
    assert np.allclose(first[row], np.rint(expected_row5), atol=1)


# ------------------------------------------------------------------ choosing among series
def test_two_series_picks_the_one_with_more_slices_and_says_why(tmp_path):
    big = write_series(tmp_path / "study" / "a", n_slices=6, seed=1)
    small = write_series(tmp_path / "study" / "b", n_slices=4, seed=2)
    res = convert_study(tmp_path / "study", None, sidecar_path=tmp_path / "ct.json")
    assert res.selection.chosen.key == big.series_uid
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["selection"]["chosen"]["series_key"] == big.series_uid
    assert "ranked first of 2" in side["selection"]["chosen"]["why"]
    (rej,) = side["selection"]["rejected"]
    assert rej["series_key"] == small.series_uid
    assert rej["reasons"] == [
        (
            "ranked below the chosen series: less coverage along the slice normal "
            "(7.5 mm over 4 positions < 12.5 mm over 6 positions)"
        )
    ]


def test_original_axial_beats_more_slices(tmp_path):
    derived = write_series(tmp_path / "s" / "a", n_slices=8, seed=1, image_type=("DERIVED", "SECONDARY", "AXIAL"))
    orig = write_series(tmp_path / "s" / "b", n_slices=5, seed=2)
    res = convert_study(tmp_path / "s", None)
    assert res.selection.chosen.key == orig.series_uid
    ((cand, reasons),) = res.selection.rejected
    assert cand.key == derived.series_uid and "not ORIGINAL/AXIAL" in reasons[0]


def test_thinner_slices_win_on_equal_coverage(tmp_path):
    # ranking compares coverage in mm (not slice counts): 5 x 5 mm and 21 x 1 mm both cover 20 mm
    write_series(tmp_path / "s" / "a", n_slices=5, seed=1, stack_vector_mm=(0, 0, 5.0))
    thin = write_series(tmp_path / "s" / "b", n_slices=21, seed=2, stack_vector_mm=(0, 0, 1.0))
    res = convert_study(tmp_path / "s", None)
    assert res.selection.chosen.key == thin.series_uid
    assert "thicker slice spacing" in res.selection.rejected[0][1][0]


def test_identical_copies_with_different_uids_choose_deterministically(tmp_path):
    a = write_series(tmp_path / "s" / "x", n_slices=4, seed=7, series_uid="1.2.3.2")
    b = write_series(tmp_path / "s" / "y", n_slices=4, seed=7, series_uid="1.2.3.1", sop_uid_prefix="1.2.3.9")
    res = convert_study(tmp_path / "s", None)
    assert res.selection.chosen.key == b.series_uid  # the smaller key
    assert "ties with the chosen series" in res.selection.rejected[0][1][0]
    assert a.series_uid == res.selection.rejected[0][0].key


def test_series_uid_chooses_by_hand(tmp_path):
    write_series(tmp_path / "s" / "a", n_slices=6, seed=1)
    small = write_series(tmp_path / "s" / "b", n_slices=4, seed=2)
    res = convert_study(tmp_path / "s", None, options=ConvertOptions(series_uid=small.series_uid))
    assert res.selection.chosen.key == small.series_uid
    assert res.selection.why == "chosen by hand (--series-uid)"
    assert res.selection.rejected[0][1] == ["not the series chosen with --series-uid"]
    with pytest.raises(DicomSeriesError, match="not in the study"):
        convert_study(tmp_path / "s", None, options=ConvertOptions(series_uid="9.9.9"))


def test_non_ct_series_only_is_a_clear_error(tmp_path):
    write_series(tmp_path / "s", n_slices=5, modality="MR")
    with pytest.raises(DicomSeriesError, match="no usable CT series") as info:
        convert_study(tmp_path / "s", None)
    assert "modality MR (expected CT)" in str(info.value)
    assert "SOP class 1.2.840.10008.5.1.4.1.1.4" in str(info.value)


def test_ct_is_chosen_over_mr_and_localizer(tmp_path):
    mr = write_series(tmp_path / "s" / "mr", n_slices=9, modality="MR", seed=1)
    loc = write_series(tmp_path / "s" / "loc", n_slices=3, seed=2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    ct = write_series(tmp_path / "s" / "ct", n_slices=4, seed=3)
    res = convert_study(tmp_path / "s", None)
    assert res.selection.chosen.key == ct.series_uid
    reasons = {c.key: r for c, r in res.selection.rejected}
    assert "modality MR (expected CT)" in reasons[mr.series_uid]
    assert "localizer (scout) images" in reasons[loc.series_uid]
    with pytest.raises(DicomSeriesError, match="cannot be converted"):
        convert_study(tmp_path / "s", None, options=ConvertOptions(series_uid=mr.series_uid))


# ------------------------------------------------------------------ corrupt files, empty UIDs, rescale
def test_corrupt_file_not_needed_is_skipped_with_a_warning(tmp_path, caplog):
    s = write_series(tmp_path / "s", n_slices=5)
    (tmp_path / "s" / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    with caplog.at_level(logging.WARNING):
        res = convert_study(tmp_path / "s", None)
    assert np.array_equal(res.volume.array, s.hu_zyx[:, ::-1, :])
    assert "garbage.dcm" in caplog.text
    assert res.sidecar["files"]["unreadable_files_skipped"] == 1


def test_corrupt_slice_of_the_chosen_series_is_a_clear_error(tmp_path):
    s = write_series(tmp_path / "s", n_slices=5)
    s.paths[3].write_bytes(s.paths[3].read_bytes()[:-50])
    with pytest.raises(DicomSeriesError, match="are corrupt") as info:
        convert_study(tmp_path / "s", None)
    assert "slice003.dcm: pixel data truncated" in str(info.value)


def test_corrupt_copy_is_ignored_when_an_intact_copy_exists(tmp_path):
    s = write_series(tmp_path / "s", n_slices=4)
    (tmp_path / "s" / "a_broken_copy.dcm").write_bytes(s.paths[2].read_bytes()[:-50])
    res = convert_study(tmp_path / "s", None)
    assert np.array_equal(res.volume.array, s.hu_zyx[:, ::-1, :])


def test_unreadable_slice_shows_as_missing_slice_with_a_note(tmp_path):
    s = write_series(tmp_path / "s", n_slices=5)
    s.paths[2].write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    with pytest.raises(DicomSeriesError, match="missing slices") as info:
        convert_study(tmp_path / "s", None)
    assert "1 unreadable DICOM file(s) were skipped (slice002.dcm)" in str(info.value)


def test_empty_uids_are_grouped_and_converted(tmp_path):
    s = write_series(tmp_path / "s", n_slices=5, series_uid="", study_uid="", sop_uid_prefix="")
    res = convert_study(tmp_path / "s", None, sidecar_path=tmp_path / "ct.json")
    assert np.array_equal(res.volume.array, s.hu_zyx[:, ::-1, :])
    assert res.selection.chosen.key.startswith("auto-")
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["series_instance_uid"] is None
    assert "no SeriesInstanceUID" in side["selection"]["chosen"]["grouped_by"]
    # the auto key can be passed as --series-uid
    again = convert_study(tmp_path / "s", None, options=ConvertOptions(series_uid=res.selection.chosen.key))
    assert again.selection.chosen.key == res.selection.chosen.key


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.5, -1000.0), (2.0, -2048.0), (1.0, 0.0)])
def test_rescale_slope_and_intercept(tmp_path, slope, intercept):
    s = write_series(tmp_path / "s", n_slices=3, rescale_slope=slope, rescale_intercept=intercept)
    res = convert_study(tmp_path / "s", None)
    assert np.array_equal(res.volume.array, np.rint(s.hu_zyx[:, ::-1, :]).astype(np.int16))
    assert res.sidecar["hu"]["rescale_slope_intercept"] == [[slope, intercept]]


def test_per_slice_rescale_beyond_int16_is_kept_exactly_as_int32(tmp_path, caplog):
    # behaviour changed (issue 19): HU beyond int16 were clipped; now the volume widens to int32
    s = write_series(tmp_path / "s", n_slices=3)
    ds = pydicom.dcmread(s.paths[1])
    ds.RescaleIntercept = 31000  # stored values up to ~2700 -> HU up to ~33700, beyond int16
    ds.save_as(s.paths[1])
    with caplog.at_level(logging.WARNING):
        res = convert_study(tmp_path / "s", tmp_path / "ct.nii.gz")
    raw1 = s.hu_zyx[1] + 1024
    assert res.volume.array.dtype == np.int32
    assert np.array_equal(res.volume.array[1], (raw1 + 31000)[::-1])
    assert np.array_equal(res.volume.array[0], s.hu_zyx[0][::-1])
    assert res.report.clipped_voxels == 0
    assert res.report.beyond_int16_voxels == int(np.count_nonzero(raw1 + 31000 > 32767)) > 0
    assert "nothing clipped" in caplog.text
    assert len(res.sidecar["hu"]["rescale_slope_intercept"]) == 2
    assert res.sidecar["hu"]["dtype"] == "int32"
    assert np.array_equal(read_ct(tmp_path / "ct.nii.gz").array, res.volume.array)


# ------------------------------------------------------------------ sidecar, determinism, CLI
def test_sidecar_has_acquisition_facts_and_no_patient_identity(tmp_path):
    s = write_series(tmp_path / "s", n_slices=4, extra_tags={"ContrastBolusAgent": "IOPAMIDOL"})
    convert_study(tmp_path / "s", tmp_path / "ct.nii.gz", sidecar_path=tmp_path / "ct.json")
    text = (tmp_path / "ct.json").read_text()
    side = json.loads(text)
    assert side["series_instance_uid"] == s.series_uid
    assert side["convolution_kernel"] == "B30f"
    assert side["kvp"] == 120.0
    assert side["slice_thickness_mm"] == 2.5
    assert side["manufacturer"] == "SYNTHETIC"
    assert side["manufacturer_model_name"] == "ctsam.convert.synthetic"
    assert side["contrast_bolus_agent"] == "IOPAMIDOL"
    assert side["study_date"] == "20200102"
    assert side["n_slices"] == 4
    assert side["spacing_xyz_mm"] == [0.7, 0.8, 2.5]
    phi_values = ("DOE", "JANE", "PHI-123456", "19700101", "Hospital", "PatientName", "PatientID", "BirthDate")
    for phi in (*phi_values, str(tmp_path)):
        assert phi not in text


def test_outputs_are_deterministic(tmp_path):
    write_series(tmp_path / "s", n_slices=4)
    convert_study(tmp_path / "s", tmp_path / "a.nii.gz", sidecar_path=tmp_path / "a.json")
    convert_study(tmp_path / "s", tmp_path / "b.nii.gz", sidecar_path=tmp_path / "b.json")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_no_dicom_files_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DicomSeriesError, match="no DICOM files found"):
        convert_study(tmp_path, None)


def test_bad_tilt_option_is_a_config_error():
    with pytest.raises(ConfigError, match="gantry tilt policy"):
        ConvertOptions(tilt="ignore")


def test_cli_convert_writes_outputs_and_maps_errors_to_exit_2(tmp_path):
    s = write_series(tmp_path / "s", n_slices=4)
    out = tmp_path / "out" / "CT.nii.gz"
    assert cli_main(["convert", str(tmp_path / "s"), "-o", str(out), "-q"]) == 0
    assert out.exists() and (tmp_path / "out" / "CT.json").exists()  # default sidecar beside the output
    assert cli_main(["convert", str(tmp_path / "s"), "-o", str(out), "--sidecar", str(tmp_path / "x.json"), "-q"]) == 0
    from ctsam.privacy import uid_pseudonym

    # the CLI writes a salted pseudonym of the UID unless privacy.keep_uids (see docs/reliability.md)
    assert json.loads((tmp_path / "x.json").read_text())["series_instance_uid"] == uid_pseudonym(s.series_uid)
    s.paths[1].unlink()
    assert cli_main(["convert", str(tmp_path / "s"), "-o", str(tmp_path / "bad.nii.gz"), "-q"]) == 2
    assert not (tmp_path / "bad.nii.gz").exists()


def test_cli_tilt_flag_overrides_config(tmp_path):
    _tilted_series(tmp_path / "s")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("convert:\n  tilt: resample\n")
    out = tmp_path / "ct.nii.gz"
    assert cli_main(["convert", str(tmp_path / "s"), "-o", str(out), "--config", str(cfg), "-q"]) == 0
    assert read_ct(out).geometry.shape_zyx == (5, 20, 16)
    args = ["convert", str(tmp_path / "s"), "-o", str(out), "--config", str(cfg), "-q"]
    assert cli_main([*args, "--tilt", "error"]) == 2


def test_sidecar_summarises_values_that_vary_per_slice(tmp_path):
    s = write_series(tmp_path / "s", n_slices=3)
    for k, path in enumerate(s.paths):
        ds = pydicom.dcmread(path)
        ds.XRayTubeCurrent = 100 + 10 * k
        ds.save_as(path)
    res = convert_study(tmp_path / "s", None)
    assert res.sidecar["dicom"]["XRayTubeCurrent"] == {"varies_per_slice": True, "min": 100, "max": 120}
    assert res.sidecar["dicom"]["KVP"] == 120.0
