"""HU kept without loss (non-integer rescale, beyond int16) and uneven slice spacing resampled on request."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from ctsam.cli import main as cli_main
from ctsam.convert import ConvertOptions, convert_study
from ctsam.errors import DicomSeriesError
from ctsam.io.image import read_ct
from tests.convert.synthetic import tilted_orientation, write_series


def _stored(paths) -> np.ndarray:
    return np.stack([pydicom.dcmread(p).pixel_array for p in paths]).astype(np.float64)


# ------------------------------------------------------------------ HU
def test_slope_0001_keeps_its_hu_as_float32(tmp_path):
    s = write_series(tmp_path / "s", n_slices=3, rescale_slope=1.0, rescale_intercept=-1024.0)
    for p in s.paths:  # an RT-export style rescale: HU = stored * 0.001 - 1024
        ds = pydicom.dcmread(p)
        ds.RescaleSlope = "0.001"
        ds.save_as(p)
    res = convert_study(tmp_path / "s", tmp_path / "ct.nii.gz", sidecar_path=tmp_path / "ct.json")
    truth = _stored(s.paths) * 0.001 - 1024.0  # independent: pydicom's stored values, rescaled in float64
    assert res.volume.array.dtype == np.float32
    assert np.array_equal(res.volume.array, truth[:, ::-1, :].astype(np.float32))
    assert len(np.unique(np.round(truth, 3) % 1)) > 10  # really fractional HU, which int16 would have lost
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["hu"]["dtype"] == "float32" and "non-integer rescale" in side["hu"]["storage"]
    assert side["hu"]["rescale_slope_intercept"] == [[0.001, -1024.0]] and side["hu"]["clipped_voxels"] == 0
    back = read_ct(tmp_path / "ct.nii.gz").array
    assert back.dtype == np.float32 and np.array_equal(back, res.volume.array)


def test_float32_exact_rescale_is_int16_with_nifti_scaling(tmp_path):
    s = write_series(
        tmp_path / "s",
        n_slices=3,
        rescale_slope=0.5,
        rescale_intercept=-1024.5,
        extra_tags={"BitsStored": 15, "HighBit": 14},
    )
    res = convert_study(tmp_path / "s", tmp_path / "ct.nii.gz", sidecar_path=tmp_path / "ct.json")
    truth = _stored(s.paths) * 0.5 - 1024.5
    assert res.report.scl_slope_inter == (0.5, -1024.5) and res.report.hu_dtype == "int16"
    assert res.volume.array.dtype == np.float32  # the API returns HU; the file holds int16 + scl
    assert np.array_equal(res.hu(), truth[:, ::-1, :])
    img = nib.load(tmp_path / "ct.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), truth[:, ::-1, :])
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["hu"]["nifti_scl_slope_inter"] == [0.5, -1024.5] and side["hu"]["dtype"] == "int16"


def test_integer_rescale_stays_int16_hu(tmp_path):
    s = write_series(tmp_path / "s", n_slices=3)
    res = convert_study(tmp_path / "s", tmp_path / "ct.nii.gz")
    assert res.volume.array.dtype == np.int16 and res.report.scl_slope_inter is None
    img = nib.load(tmp_path / "ct.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert (img.dataobj.slope, img.dataobj.inter) == (1.0, 0.0)  # no scaling written
    assert np.array_equal(read_ct(tmp_path / "ct.nii.gz").array, s.hu_zyx[:, ::-1, :].astype(np.int16))


# ------------------------------------------------------------------ uneven spacing
def _uneven(folder, steps, **kw):
    z = np.concatenate([[0.0], np.cumsum(steps)])
    positions = np.stack([np.full_like(z, -10.0), np.full_like(z, -20.0), 30.0 + z], axis=1)
    return write_series(folder, positions_mm=positions, **kw)


def test_uneven_spacing_is_refused_by_default_naming_the_option(tmp_path):
    _uneven(tmp_path / "s", [2.0, 2.0, 2.6, 1.4, 2.0])
    with pytest.raises(DicomSeriesError, match="not uniform") as info:
        convert_study(tmp_path / "s", None)
    assert "--uneven-spacing resample" in info.value.fix


def test_uneven_spacing_resampled_linearly_onto_the_median_step(tmp_path):
    s = _uneven(tmp_path / "s", [2.0, 2.0, 2.6, 1.4, 2.0])  # positions 0 2 4 6.6 8 10
    res = convert_study(
        tmp_path / "s", None, sidecar_path=tmp_path / "ct.json", options=ConvertOptions(uneven_spacing="resample")
    )
    assert res.volume.geometry.shape_zyx[0] == 6 and res.volume.geometry.spacing_xyz_mm[2] == pytest.approx(2.0)
    hu = s.hu_zyx[:, ::-1, :].astype(np.float64)
    arr = res.volume.array
    assert np.array_equal(arr[:3], hu[:3].astype(np.int16))  # on-grid slices are copied
    # target 6.0 lies between 4 (slice 2) and 6.6 (slice 3): weight (6 - 4) / 2.6
    w = 2.0 / 2.6
    assert np.array_equal(arr[3], np.rint(hu[2] * (1 - w) + hu[3] * w).astype(np.int16))
    assert np.array_equal(arr[4], hu[4].astype(np.int16)) and np.array_equal(arr[5], hu[5].astype(np.int16))
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["uneven_spacing"]["original_positions_along_normal_mm"] == [0.0, 2.0, 4.0, 6.6, 8.0, 10.0]
    assert side["uneven_spacing"]["target_spacing_mm"] == 2.0


def test_uneven_spacing_smallest_target_and_cli_flag(tmp_path):
    _uneven(tmp_path / "s", [2.0, 2.0, 2.6, 1.4, 2.0])
    res = convert_study(
        tmp_path / "s", None, options=ConvertOptions(uneven_spacing="resample", uneven_target="smallest")
    )
    assert res.volume.geometry.spacing_xyz_mm[2] == pytest.approx(1.4)
    assert res.volume.geometry.shape_zyx[0] == int(10.0 / 1.4) + 1
    code = cli_main(["convert", str(tmp_path / "s"), "-o", str(tmp_path / "ct.nii.gz"), "--uneven-spacing", "resample"])
    assert code == 0 and read_ct(tmp_path / "ct.nii.gz").array.shape[0] == 6


def test_uneven_resample_never_bridges_a_wide_gap_or_hides_a_missing_slice(tmp_path):
    _uneven(tmp_path / "gap", [2.0, 2.0, 2.6, 1.4, 200.0, 2.0, 2.0])
    with pytest.raises(DicomSeriesError, match="gap too wide"):
        convert_study(tmp_path / "gap", None, options=ConvertOptions(uneven_spacing="resample"))
    _uneven(tmp_path / "miss", [2.0] * 12 + [4.0] + [2.0] * 8)  # one missing slice among uniform ones
    with pytest.raises(DicomSeriesError, match="missing slices"):
        convert_study(tmp_path / "miss", None, options=ConvertOptions(uneven_spacing="resample"))


def test_uneven_spacing_combined_with_tilt_resampling(tmp_path):
    # slices tilted 30 degrees about x; table steps 2, 2, 3, 2 mm along z (uneven along the normal)
    iop = tilted_orientation(30.0)
    z = np.array([0.0, 2.0, 4.0, 7.0, 9.0])
    positions = np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=1)
    write_series(tmp_path / "s", positions_mm=positions, iop=iop, pixel_spacing_mm=(1.0, 1.0))
    with pytest.raises(DicomSeriesError):
        convert_study(tmp_path / "s", None, options=ConvertOptions(tilt="resample"))
    res = convert_study(
        tmp_path / "s",
        None,
        sidecar_path=tmp_path / "ct.json",
        options=ConvertOptions(tilt="resample", uneven_spacing="resample"),
    )
    step = 2.0 * np.cos(np.deg2rad(30.0))
    assert res.volume.geometry.spacing_xyz_mm[2] == pytest.approx(step)
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["gantry_tilt"]["resampled"] and side["uneven_spacing"]["resampled"]
    assert side["gantry_tilt"]["angle_deg"] == pytest.approx(30.0, abs=0.01)


# ------------------------------------------------------------------ streaming writer
@pytest.mark.parametrize("slope", [1.0, 0.001])
def test_streamed_output_is_byte_identical_to_the_in_memory_one(tmp_path, slope):
    # BitsStored 15: stored + intercept provably fits int16, so the stack can stream
    s = write_series(tmp_path / "s", n_slices=40, rows=64, columns=48, extra_tags={"BitsStored": 15, "HighBit": 14})
    if slope != 1.0:
        for p in s.paths:
            ds = pydicom.dcmread(p)
            ds.RescaleSlope = str(slope)
            ds.save_as(p)
    kept = convert_study(tmp_path / "s", tmp_path / "a.nii.gz", sidecar_path=tmp_path / "a.json")
    streamed = convert_study(tmp_path / "s", tmp_path / "b.nii.gz", sidecar_path=tmp_path / "b.json", keep_volume=False)
    assert streamed.volume is None and kept.volume is not None
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert np.array_equal(read_ct(tmp_path / "b.nii.gz").array, kept.volume.array)


def test_gzip_chunks_make_one_valid_stream_for_gzip_nibabel_and_simpleitk(tmp_path, monkeypatch):
    import gzip

    import SimpleITK as sitk

    from ctsam.convert import nifti

    monkeypatch.setattr(nifti, "CHUNK_BYTES", 1000)  # many gzip members
    s = write_series(tmp_path / "s", n_slices=5, rows=32, columns=32)
    res = convert_study(tmp_path / "s", tmp_path / "ct.nii.gz")
    raw = gzip.decompress((tmp_path / "ct.nii.gz").read_bytes())
    assert len(raw) == 352 + res.volume.array.nbytes
    assert np.array_equal(read_ct(tmp_path / "ct.nii.gz").array, s.hu_zyx[:, ::-1, :].astype(np.int16))
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nii.gz")))
    assert np.array_equal(itk, res.volume.array)
