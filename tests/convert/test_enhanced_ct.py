"""Enhanced CT and Legacy Converted Enhanced CT: per-frame geometry and rescale, equal to the classic conversion."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset

from ctsam.convert import ConvertOptions, convert_study
from ctsam.io.dicom import CT_IMAGE_STORAGE, read_headers
from tests.convert.synthetic import write_series


def _ect_file():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm")
    if path is None:
        pytest.skip("eCT_Supplemental.dcm not found (pip install pydicom-data, part of ctsam[dev])")
    return path


def _classic_from_frames(src, folder) -> None:
    """Write each frame of an Enhanced CT file as a classic single-frame CT Image Storage file."""
    ds = pydicom.dcmread(src)
    shared = ds.SharedFunctionalGroupsSequence[0]
    frames = ds.pixel_array
    folder.mkdir(parents=True)
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        out = pydicom.Dataset()
        out.file_meta = FileMetaDataset()
        out.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        out.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{k + 1}"
        out.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        out.SOPClassUID = CT_IMAGE_STORAGE
        out.SOPInstanceUID = out.file_meta.MediaStorageSOPInstanceUID
        out.StudyInstanceUID = ds.StudyInstanceUID
        out.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77"
        out.FrameOfReferenceUID = ds.FrameOfReferenceUID
        out.Modality = "CT"
        out.ImageType = list(shared.CTImageFrameTypeSequence[0].FrameType)
        out.InstanceNumber = k + 1
        out.ImagePositionPatient = item.PlanePositionSequence[0].ImagePositionPatient
        out.ImageOrientationPatient = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        out.PixelSpacing = shared.PixelMeasuresSequence[0].PixelSpacing
        out.RescaleSlope = shared.PixelValueTransformationSequence[0].RescaleSlope
        out.RescaleIntercept = shared.PixelValueTransformationSequence[0].RescaleIntercept
        out.Rows, out.Columns = ds.Rows, ds.Columns
        out.SamplesPerPixel, out.PhotometricInterpretation = 1, "MONOCHROME2"
        out.BitsAllocated, out.BitsStored, out.HighBit = ds.BitsAllocated, ds.BitsStored, ds.HighBit
        out.PixelRepresentation = ds.PixelRepresentation
        out.PixelData = frames[k].tobytes()
        out.save_as(folder / f"frame{k}.dcm", enforce_file_format=True)


def test_enhanced_ct_supplemental_equals_its_classic_conversion(tmp_path):
    src = _ect_file()
    (tmp_path / "mf").mkdir()
    shutil.copy(src, tmp_path / "mf" / "ect.dcm")
    _classic_from_frames(src, tmp_path / "classic")
    options = ConvertOptions(min_slices=2)  # the file holds 2 frames, 10 mm apart
    mf = convert_study(tmp_path / "mf", None, options=options)
    classic = convert_study(tmp_path / "classic", None, options=options)
    assert mf.volume.array.shape == (2, 512, 512)
    assert np.array_equal(mf.volume.array, classic.volume.array)
    assert mf.volume.geometry == classic.volume.geometry
    # independent reading: pydicom's frames, rescaled by the shared functional group
    ds = pydicom.dcmread(src)
    hu = ds.pixel_array.astype(np.int32) - 1024
    positions = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    order = np.argsort(positions)[::-1]  # the slice normal of this orientation points to -z (feet)
    assert np.array_equal(mf.volume.array, hu[order][:, ::-1, :])
    assert mf.volume.geometry.spacing_xyz_mm[2] == pytest.approx(10.0)
    assert mf.sidecar["dicom"]["SliceThickness"] == 10.0  # from the Pixel Measures functional group


def test_frame_headers_take_geometry_from_functional_groups(tmp_path):
    headers = read_headers(Path(_ect_file()))
    assert [h.frame_index for h in headers] == [0, 1]
    assert [h.ipp_xyz_mm[2] for h in headers] == [-159.0, -149.0]
    assert headers[0].iop == (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert headers[0].pixel_spacing_mm == (0.388672, 0.388672)
    assert (headers[0].rescale_slope, headers[0].rescale_intercept) == (1.0, -1024.0)
    assert headers[0].image_type[:3] == ("DERIVED", "PRIMARY", "PERFUSION")


@pytest.mark.parametrize("shuffle", [False, True])
def test_legacy_converted_multiframe_is_voxel_identical_to_the_classic_series(tmp_path, shuffle):
    hd = pytest.importorskip("highdicom")
    s = write_series(tmp_path / "classic", n_slices=7, rows=24, columns=20)
    datasets = [pydicom.dcmread(p) for p in s.paths]
    if shuffle:  # frame order in the file differs from slice order: positions decide
        datasets = [datasets[i] for i in (3, 0, 6, 1, 5, 2, 4)]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid="1.2.826.0.1.3680043.8.498.88",
        series_number=9,
        sop_instance_uid="1.2.826.0.1.3680043.8.498.88.1",
        instance_number=1,
    )
    (tmp_path / "mf").mkdir()
    mf.save_as(tmp_path / "mf" / "mf.dcm")
    classic = convert_study(tmp_path / "classic", None)
    multi = convert_study(tmp_path / "mf", None, sidecar_path=tmp_path / "mf.json")
    assert np.array_equal(multi.volume.array, classic.volume.array)
    assert multi.volume.geometry == classic.volume.geometry
    assert np.array_equal(multi.volume.array, s.hu_zyx[:, ::-1, :].astype(np.int16))
    assert multi.sidecar["convolution_kernel"] == "B30f"  # from the converted attributes
    assert multi.selection.chosen.original_axial


def test_enhanced_ct_with_two_temporal_positions_splits_into_stacks(tmp_path):
    hd = pytest.importorskip("highdicom")
    s = write_series(tmp_path / "classic", n_slices=4, rows=16, columns=16)
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in s.paths],
        series_instance_uid="1.2.826.0.1.3680043.8.498.89",
        series_number=9,
        sop_instance_uid="1.2.826.0.1.3680043.8.498.89.1",
        instance_number=1,
    )
    # make it 4-D: the same 4 positions twice, at two temporal positions
    items = list(mf.PerFrameFunctionalGroupsSequence)
    frames = mf.pixel_array
    for item in items:
        item.FrameContentSequence[0].TemporalPositionIndex = 1
    extra = []
    for item in items:
        second = copy.deepcopy(item)
        second.FrameContentSequence[0].TemporalPositionIndex = 2
        extra.append(second)
    mf.PerFrameFunctionalGroupsSequence = items + extra
    mf.NumberOfFrames = 8
    mf.PixelData = np.concatenate([frames, frames + 1]).astype(frames.dtype).tobytes()
    (tmp_path / "mf").mkdir()
    mf.save_as(tmp_path / "mf" / "mf.dcm")
    res = convert_study(tmp_path / "mf", None)
    assert res.selection.chosen.key.endswith("#1") or res.selection.chosen.key.endswith("#2")
    assert res.stack.n_slices == 4
    assert res.selection.tie  # two time points, equal on every criterion: decided by key and warned
