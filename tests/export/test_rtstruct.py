"""RTSTRUCT export: one ROI per structure, contours on the source slices, read back by pydicom."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

pydicom = pytest.importorskip("pydicom")


def _rasterise(ds, roi_number: int, labelmap) -> np.ndarray:
    """The ROI's contours back on the label grid, by the even-odd rule over each slice's polygons."""
    g = labelmap.geometry
    out = np.zeros(g.shape_zyx, bool)
    rc = next(r for r in ds.ROIContourSequence if r.ReferencedROINumber == roi_number)
    _, ny, nx = g.shape_zyx
    yy, xx = np.mgrid[0:ny, 0:nx]
    centres = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(float)
    for c in rc.ContourSequence:
        pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
        assert c.ContourGeometricType == "CLOSED_PLANAR" and len(pts) == int(c.NumberOfContourPoints)
        idx = np.array([g.world_to_index(p) for p in pts])  # x, y, z index coordinates
        k = round(float(idx[0, 2]))
        assert np.allclose(idx[:, 2], k, atol=1e-3)  # planar, on a slice
        inside = MplPath(idx[:, :2]).contains_points(centres).reshape(ny, nx)
        out[k] ^= inside
    return out


def test_rtstruct_contours_lie_on_the_structures(identified_series, tmp_path):
    from ctsam.export.rtstruct import RT_STRUCTURE_SET_STORAGE, export_rtstruct

    dicom_dir, labelmap, _ = identified_series
    out = tmp_path / "rt.dcm"
    info = export_rtstruct(labelmap, dicom_dir, out, case="syn")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == RT_STRUCTURE_SET_STORAGE and ds.Modality == "RTSTRUCT"
    assert info["rois"] == 3
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["kidney_left", "liver", "aorta"]
    # it references the source series and each of its slices
    src = [pydicom.dcmread(f) for f in sorted(dicom_dir.glob("*.dcm"))]
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == src[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == {s.SOPInstanceUID for s in src}
    # copy (the default): the source's identity, for PACS return
    assert str(ds.PatientName) == "DOE^JANE^Q" and ds.StudyInstanceUID == src[0].StudyInstanceUID
    # the contours give back exactly the voxels of each structure (the liver has a hole on every slice)
    for roi in ds.StructureSetROISequence:
        value = {v: k for k, v in labelmap.labels.items()}[roi.ROIName]
        np.testing.assert_array_equal(
            _rasterise(ds, roi.ROINumber, labelmap), labelmap.array == value, err_msg=roi.ROIName
        )
    # deterministic bytes
    again = tmp_path / "rt2.dcm"
    export_rtstruct(labelmap, dicom_dir, again, case="syn")
    assert again.read_bytes() == out.read_bytes()


def test_cli_export_rtstruct_and_seg(identified_series, tmp_path):
    pytest.importorskip("highdicom")
    from ctsam.cli import main
    from ctsam.io.image import write_labelmap

    dicom_dir, labelmap, _ = identified_series
    labels = tmp_path / "labels.nii.gz"
    write_labelmap(labels, labelmap)
    assert (
        main(["export-seg", str(labels), str(dicom_dir), "--format", "rtstruct", "-o", str(tmp_path / "rt.dcm")]) == 0
    )
    assert len(pydicom.dcmread(tmp_path / "rt.dcm").ROIContourSequence) == 3
    assert main(["export-seg", str(labels), str(dicom_dir), "-o", str(tmp_path / "seg.dcm")]) == 0
    segments = [s.SegmentLabel for s in pydicom.dcmread(tmp_path / "seg.dcm").SegmentSequence if s.SegmentNumber > 0]
    assert segments == ["kidney_left", "liver", "aorta"]  # LABELMAP SEGs also list segment 0 (background)


def test_seg_of_a_series_without_type2_attributes(identified_series, tmp_path):
    """The demo writer leaves out PatientBirthDate (type 2): added empty in memory, noted as a repair."""
    pytest.importorskip("highdicom")
    import shutil

    from ctsam.export.dicomseg import export_seg

    dicom_dir, labelmap, _ = identified_series
    bare = tmp_path / "bare"
    shutil.copytree(dicom_dir, bare)
    for f in bare.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.PatientBirthDate
        ds.save_as(f, enforce_file_format=True)
    info = export_seg(labelmap, bare, tmp_path / "seg.dcm", case="syn")
    assert any("PatientBirthDate" in r for r in info["repairs"])
    assert pydicom.dcmread(tmp_path / "seg.dcm").PatientBirthDate == ""


@pytest.mark.shared_data
def test_rtstruct_of_the_real_series(shared_data, tmp_path):
    """TotalSegmentator's example series (JPEG 2000, empty UIDs, rows stored bottom-up in the NIfTI):
    31 ROIs; three of them rasterised back equal the label map."""
    from ctsam.export.rtstruct import export_rtstruct
    from ctsam.io.image import read_labelmap

    d = shared_data / "totalseg_examples"
    labelmap = read_labelmap(d / "example_seg_dicom.nii.gz")
    out = tmp_path / "rt.dcm"
    info = export_rtstruct(labelmap, d / "example_ct_dicom", out)
    ds = pydicom.dcmread(out)
    assert info["rois"] == len(ds.StructureSetROISequence) == 31
    by_name = {r.ROIName: r.ROINumber for r in ds.StructureSetROISequence}
    index = {v: k for k, v in labelmap.labels.items()}
    for name in sorted(by_name)[:3]:
        np.testing.assert_array_equal(
            _rasterise(ds, by_name[name], labelmap), labelmap.array == index[name], err_msg=name
        )
