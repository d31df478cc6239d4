"""ctsam.io.dicom: finding files, reading headers, grouping into series, decoding pixels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctsam.errors import DicomSeriesError
from ctsam.io.dicom import CT_IMAGE_STORAGE, group_series, is_dicom_part10, read_header, read_pixels, scan_dicom_files
from tests.convert.synthetic import write_series


def test_scan_finds_nested_files_with_any_names_and_ignores_others(tmp_path, caplog):
    write_series(tmp_path / "a" / "b", n_slices=3, name="IMG{k}", seed=1)
    write_series(tmp_path / "c", n_slices=4, name="{k}.dcm", seed=2)
    (tmp_path / "README.txt").write_text("not dicom")
    (tmp_path / "c" / "DICOMDIR_like").write_bytes(b"\0" * 200)
    (tmp_path / ".hidden").mkdir()
    write_series(tmp_path / ".hidden", n_slices=3, seed=3)
    scan = scan_dicom_files(tmp_path)
    assert len(scan.headers) == 7
    assert scan.n_other_files == 2
    assert scan.unreadable == []
    assert sorted(h.rel for h in scan.headers)[:3] == ["a/b/IMG0", "a/b/IMG1", "a/b/IMG2"]


def test_scan_reports_unreadable_dicom_with_a_warning(tmp_path, caplog):
    write_series(tmp_path, n_slices=3)
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    with caplog.at_level(logging.WARNING):
        scan = scan_dicom_files(tmp_path)
    assert len(scan.headers) == 3
    assert [rel for rel, _ in scan.unreadable] == ["broken.dcm"]
    assert "broken.dcm" in caplog.text


def test_scan_of_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DicomSeriesError, match="study folder not found"):
        scan_dicom_files(tmp_path / "nope")


def test_header_fields_and_empty_uids_fall_back_to_file_meta(tmp_path):
    s = write_series(tmp_path, n_slices=3, series_uid="", sop_uid_prefix="", rescale_intercept=-1000, rescale_slope=2)
    h = read_header(s.paths[1])
    assert h.series_uid == ""
    assert h.sop_class_uid == CT_IMAGE_STORAGE  # from the dataset
    assert h.ipp_xyz_mm == pytest.approx(tuple(s.positions_mm[1]))
    assert h.iop == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert h.pixel_spacing_mm == (0.8, 0.7)
    assert (h.rows, h.columns) == (16, 16)
    assert (h.rescale_slope, h.rescale_intercept) == (2.0, -1000.0)
    assert h.is_original_axial and not h.is_localizer
    assert h.acquisition["KVP"] == 120.0
    assert h.acquisition["ConvolutionKernel"] == "B30f"
    assert h.acquisition["ContrastBolusAgent"] is None  # empty -> None
    # nothing patient-identifying is kept
    assert "PatientName" not in h.acquisition and "PatientID" not in h.acquisition


def test_sop_class_from_file_meta_when_dataset_value_is_empty(tmp_path):
    s = write_series(tmp_path, n_slices=3, extra_tags={"SOPClassUID": ""})
    assert read_header(s.paths[0]).sop_class_uid == CT_IMAGE_STORAGE


def test_is_dicom_part10(tmp_path):
    s = write_series(tmp_path, n_slices=3)
    assert is_dicom_part10(s.paths[0])
    (tmp_path / "x").write_bytes(b"DICM" + b"x" * 200)
    assert not is_dicom_part10(tmp_path / "x")


def test_grouping_by_series_uid(tmp_path):
    write_series(tmp_path / "s1", n_slices=3, seed=1)
    write_series(tmp_path / "s2", n_slices=4, seed=2)
    groups = group_series(scan_dicom_files(tmp_path).headers)
    assert [len(g.headers) for g in groups] == [3, 4]
    assert all(g.grouped_by == "SeriesInstanceUID" for g in groups)


def test_grouping_without_uids_uses_series_attributes(tmp_path):
    # two reconstructions without SeriesInstanceUID: different series number and description
    write_series(tmp_path / "a", n_slices=3, series_uid="", series_number=2, series_description="soft", seed=1)
    write_series(tmp_path / "b", n_slices=5, series_uid="", series_number=3, series_description="lung", seed=2)
    groups = group_series(scan_dicom_files(tmp_path).headers)
    assert sorted(len(g.headers) for g in groups) == [3, 5]
    assert all(g.key.startswith("auto-") and "no SeriesInstanceUID" in g.grouped_by for g in groups)
    # keys are stable across runs
    again = group_series(scan_dicom_files(tmp_path).headers)
    assert [g.key for g in groups] == [g.key for g in again]


def test_grouping_without_uids_splits_acquisitions_that_overlap(tmp_path):
    # pre- and post-contrast at the same positions, same series attributes, only AcquisitionNumber differs
    write_series(tmp_path / "pre", n_slices=4, series_uid="", acquisition_number=1, seed=1)
    write_series(tmp_path / "post", n_slices=4, series_uid="", acquisition_number=2, seed=2)
    groups = group_series(scan_dicom_files(tmp_path).headers)
    assert len(groups) == 2
    assert {g.first.acquisition_number for g in groups} == {1, 2}
    assert all("AcquisitionNumber" in g.grouped_by for g in groups)


def test_grouping_keeps_a_series_whole_when_acquisition_numbers_vary_without_overlap(tmp_path):
    s = write_series(tmp_path, n_slices=4, series_uid="", acquisition_number=None)
    # real scanners number acquisitions within one series (dicom2nifti_failing/sliceincrement: 4,4,5,5)

    for k, p in enumerate(s.paths):
        ds = pydicom.dcmread(p)
        ds.AcquisitionNumber = 4 + k // 2
        ds.save_as(p)
    assert len(group_series(scan_dicom_files(tmp_path).headers)) == 1


def test_read_pixels_returns_stored_values(tmp_path):
    s = write_series(tmp_path, n_slices=3)
    raw = read_pixels(read_header(s.paths[2]))
    assert raw.shape == (16, 16)
    assert np.array_equal(raw.astype(np.int32) - 1024, s.hu_zyx[2])


def test_read_pixels_of_truncated_file_is_a_clear_error(tmp_path):
    s = write_series(tmp_path, n_slices=3)
    data = s.paths[1].read_bytes()
    s.paths[1].write_bytes(data[:-100])
    header = read_header(s.paths[1])  # the header is intact
    with pytest.raises(DicomSeriesError, match="cannot decode the pixel data") as info:
        read_pixels(header)
    assert "slice001.dcm" in str(info.value)


def test_header_flags_truncated_or_missing_pixel_data(tmp_path):
    s = write_series(tmp_path, n_slices=3)
    assert read_header(s.paths[0]).pixel_problem is None
    data = s.paths[1].read_bytes()
    s.paths[1].write_bytes(data[:-100])
    assert "truncated" in read_header(s.paths[1]).pixel_problem
    s.paths[2].write_bytes(data[:900])  # header intact up to the geometry, no pixel data
    h = read_header(s.paths[2])
    assert h.ipp_xyz_mm is not None and "no pixel data" in h.pixel_problem


@pytest.mark.parametrize(
    ("signed", "bits_stored", "value"), [(False, 12, 0xF123), (True, 12, 0x0923), (True, 16, -5), (False, 16, 60000)]
)
def test_fast_native_read_equals_pydicom(tmp_path, signed, bits_stored, value):
    from pydicom.pixels import pixel_array

    from ctsam.io.dicom import _read_native_16bit

    s = write_series(tmp_path, n_slices=1)
    ds = pydicom.dcmread(s.paths[0])
    ds.PixelRepresentation = int(signed)
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    pixels = np.full((16, 16), value, dtype="<i2" if signed else "<u2")
    pixels[3, 4] = 7
    ds.PixelData = pixels.tobytes()
    ds.save_as(s.paths[0])
    header = read_header(s.paths[0])
    fast = _read_native_16bit(header)
    assert fast is not None
    reference = pixel_array(s.paths[0])
    assert fast.dtype == reference.dtype
    assert np.array_equal(fast, reference)
    assert np.array_equal(read_pixels(header), reference)


def test_parallel_header_scan_equals_the_serial_one(tmp_path, caplog):
    write_series(tmp_path / "a", n_slices=9, seed=1)
    write_series(tmp_path / "b" / "deep", n_slices=7, seed=2)
    (tmp_path / "b" / "notes.txt").write_text("not dicom")
    bad = tmp_path / "b" / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")  # a preamble, then garbage
    serial = scan_dicom_files(tmp_path, workers=1)
    parallel = scan_dicom_files(tmp_path, workers=3)
    assert [h.rel for h in parallel.headers] == [h.rel for h in serial.headers]
    assert parallel.headers == serial.headers
    assert [h.acquisition for h in parallel.headers] == [h.acquisition for h in serial.headers]
    assert parallel.unreadable == serial.unreadable and len(serial.unreadable) == 1
    assert parallel.n_other_files == serial.n_other_files == 1


def _dicom_files_to_compare():
    import glob

    from pydicom.data import get_testdata_files

    from tests.conftest import shared_data_dir

    files = [Path(p) for p in get_testdata_files("*.dcm")]
    shared = shared_data_dir()
    for sub in ("elastix_thorax141", "totalseg_examples/example_ct_dicom", "dcmqi_ct3slice", "dicom2nifti_failing"):
        files += [Path(p) for p in sorted(glob.glob(str(shared / sub / "**" / "*"), recursive=True))[:40]]
    return [p for p in files if p.is_file() and is_dicom_part10(p)]


def test_fast_raw_element_decoding_gives_the_same_headers_as_pydicom(monkeypatch):
    """The header fast path decodes simple elements itself; pydicom's own conversion must agree on
    every file pydicom ships as test data (many VRs, endiannesses, charsets) and the shared real CT."""
    from ctsam.io import dicom

    files = _dicom_files_to_compare()
    assert len(files) > 100
    compared = 0
    for path in files:
        try:
            monkeypatch.setattr(dicom, "_FAST_RAW", False)
            slow = dicom.read_headers(path)
        except Exception:  # noqa: BLE001, S112 - files pydicom itself cannot read are not the point here
            continue
        finally:
            monkeypatch.setattr(dicom, "_FAST_RAW", True)
        fast = dicom.read_headers(path)
        assert fast == slow, path
        assert [h.acquisition for h in fast] == [h.acquisition for h in slow], path
        compared += 1
    assert compared > 100
