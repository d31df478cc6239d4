"""RTSTRUCT export of a label map whose CT came from DICOM: one ROI per structure, planar contours on
the source slices (pydicom; radiotherapy planning systems, 3D Slicer, OHIF and most PACS viewers read it).

Each structure's mask on each source slice (the label map is matched to the series by world position,
as for DICOM-SEG) is traced with ``contourpy`` at level 0.5 between pixel centres, so a polygon
encloses exactly the pixel centres of the mask; holes are separate contours (the even-odd rule gives the
mask back). Points are written in patient coordinates (LPS mm), each contour referencing its slice's
SOP instance. Identical inputs give identical bytes (UIDs from content hashes, dates from the source).
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from ctsam import __version__
from ctsam.errors import InputDataError
from ctsam.volume import LabelMap

log = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.2"  # RTReferencedStudySequence's referenced SOP class
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# patient / study attributes copied from the source (then kept or removed by the identity mode)
_COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
)


def slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (each (n, 2) as (column, row) pixel coordinates) around the mask's pixel centres."""
    import contourpy

    padded = np.pad(mask2d.astype(np.float64), 1)
    gen = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate)
    out = []
    for line in gen.lines(0.5):
        pts = np.asarray(line, dtype=np.float64) - 1.0  # undo the padding
        if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
            pts = pts[:-1]  # CLOSED_PLANAR: the last point joins the first implicitly
        if len(pts) >= 3:
            out.append(pts)
    return out


def _pixel_to_patient(pts_cr: np.ndarray, ds) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    p0 = np.asarray(ds.ImagePositionPatient, dtype=float)
    return p0 + pts_cr[:, :1] * col_spacing * iop[:3] + pts_cr[:, 1:2] * row_spacing * iop[3:]


def _ds_decimal(values: np.ndarray) -> list[str]:
    # DS values are at most 16 characters: 4 decimals of mm keep every coordinate well within that
    return [f"{v:.4f}" for v in values]


def build_rtstruct(labelmap: LabelMap, datasets: list, *, case: str | None = None):
    """A pydicom ``FileDataset`` RT Structure Set for the structures of ``labelmap`` on ``datasets``."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import UID

    from ctsam.export.dicomseg import _uid, frames_from_labelmap
    from ctsam.io.labeltable import label_color_rgb

    frames = frames_from_labelmap(labelmap, datasets, case=case)
    present = [int(v) for v in np.unique(frames) if v != 0]
    if not present:
        raise InputDataError(
            "label map is empty on the DICOM grid", case=case, fix="check that the right label map was passed"
        )
    src = datasets[0]
    names = [labelmap.labels.get(v, f"label_{v}") for v in present]
    content = hashlib.sha256(frames.tobytes() + "|".join(names).encode()).hexdigest()
    series_uid = str(src.SeriesInstanceUID)
    sop_uid = _uid("rtstruct-instance", content, series_uid)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RT_STRUCTURE_SET_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    ds = FileDataset("rtstruct.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    for key in _COPIED:
        if key in src:
            setattr(ds, key, src[key].value)
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
    ):
        if key not in ds:
            setattr(ds, key, "")  # type 2 attributes: present, possibly empty
    date = str(src.get("SeriesDate") or src.get("StudyDate") or "19700101")
    time_ = str(src.get("SeriesTime") or src.get("StudyTime") or "000000")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = _uid("rtstruct-series", content, series_uid)
    ds.SeriesNumber = 901
    ds.SeriesDescription = "ctsam structures"
    ds.InstanceNumber = 1
    ds.Manufacturer = "ctsam"
    ds.ManufacturerModelName = "ctsam fuse"
    ds.SoftwareVersions = __version__
    ds.OperatorsName = ""
    ds.StructureSetLabel = "CTSAM"
    ds.StructureSetName = "ctsam"
    ds.StructureSetDate = date
    ds.StructureSetTime = time_
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time_
    ds.ApprovalStatus = "UNAPPROVED"

    frame_uid = str(src.FrameOfReferenceUID)
    contour_images = []
    for s in datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = str(s.SOPClassUID)
        item.ReferencedSOPInstanceUID = str(s.SOPInstanceUID)
        contour_images.append(item)
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series_uid
    ref_series.ContourImageSequence = contour_images
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    ref_study.ReferencedSOPInstanceUID = str(src.StudyInstanceUID)
    ref_study.RTReferencedSeriesSequence = [ref_series]
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = frame_uid
    ref_frame.RTReferencedStudySequence = [ref_study]
    ds.ReferencedFrameOfReferenceSequence = [ref_frame]

    rois, roi_contours, observations = [], [], []
    n_contours = 0
    for number, (value, name) in enumerate(zip(present, names), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = f"ctsam {__version__}"
        rois.append(roi)
        contours = []
        for k in np.nonzero((frames == value).any(axis=(1, 2)))[0]:
            s = datasets[int(k)]
            for poly in slice_contours(frames[k] == value):
                c = Dataset()
                img = Dataset()
                img.ReferencedSOPClassUID = str(s.SOPClassUID)
                img.ReferencedSOPInstanceUID = str(s.SOPInstanceUID)
                c.ContourImageSequence = [img]
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(poly)
                c.ContourData = _ds_decimal(_pixel_to_patient(poly, s).ravel())
                contours.append(c)
        n_contours += len(contours)
        rc = Dataset()
        rc.ROIDisplayColor = list(label_color_rgb(value))
        rc.ReferencedROINumber = number
        rc.ContourSequence = contours
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    log.info("RTSTRUCT: %d ROIs, %d contours on %d slices", len(rois), n_contours, len(datasets))
    return ds


def export_rtstruct(
    labelmap: LabelMap,
    dicom_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    case: str | None = None,
    identity: str = "copy",
    uid_salt: str = "",
) -> dict:
    """Write an RTSTRUCT for ``labelmap`` referencing the series in ``dicom_dir`` (atomically).

    Returns ``{"rois", "contours", "repairs"}``.
    """
    from ctsam.export.dicomseg import read_source_series
    from ctsam.export.identity import apply_identity, check_mode
    from ctsam.io.atomic import atomic_path

    check_mode(identity)
    datasets, repairs = read_source_series(dicom_dir, case=case)
    ds = build_rtstruct(labelmap, datasets, case=case)
    apply_identity(ds, identity, pseudonym=case, salt=uid_salt)
    with atomic_path(output) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    n = sum(len(rc.ContourSequence) for rc in ds.ROIContourSequence)
    return {"rois": len(ds.StructureSetROISequence), "contours": n, "repairs": repairs}
