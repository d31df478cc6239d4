"""Write a CT volume as a DICOM CT Image Storage series (one file per axial slice, pydicom).

Pixel data are int16 stored values with RescaleIntercept -1024 / slope 1, as scanners write them.
No patient-identifying data: the patient name is a fixed placeholder, the patient id is the
pseudonymous case id, and dates are a fixed synthetic study date.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ctsam.volume import CTVolume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RESCALE_INTERCEPT = -1024


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["ctsam-demo", *map(str, parts)]))


def write_series(
    ct: CTVolume,
    folder: str | os.PathLike[str],
    *,
    case_id: str,
    seed: int,
    kvp: float = 120.0,
    kernel: str = "B30f",
    contrast: bool = False,
    skip_slices: tuple[int, ...] = (),
) -> list[Path]:
    """Write ``ct`` (HU, identity direction) into ``folder`` as ``IM0001.dcm``...; return the files.

    ``skip_slices`` leaves those slice indices out (used to make a deliberately broken series).
    UIDs are derived from ``case_id`` and ``seed``, so the same call writes identical bytes.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = ct.geometry
    if not np.allclose(g.direction_matrix, np.eye(3)):
        raise ValueError("write_series only writes axial series with an identity direction")
    sx, sy, sz = g.spacing_xyz_mm
    study_uid, series_uid, frame_uid = (_uid(case_id, seed, k) for k in ("study", "series", "frame"))
    stored = (ct.array.astype(np.int32) - RESCALE_INTERCEPT).clip(-32768, 32767).astype(np.int16)
    written = []
    for k in range(g.shape_zyx[0]):
        if k in skip_slices:
            continue
        sop_uid = _uid(case_id, seed, "slice", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = _uid("implementation")
        path = folder / f"IM{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "PHANTOM^DEMO"
        ds.PatientID = case_id
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.Manufacturer = "ctsam"
        ds.ManufacturerModelName = "demo phantom"
        ds.SeriesDescription = "synthetic whole-body phantom"
        ds.BodyPartExamined = "CHEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.KVP = f"{kvp:g}"
        ds.ConvolutionKernel = kernel
        ds.ContrastBolusAgent = "IODINE" if contrast else ""
        ds.SliceThickness = f"{sz:g}"
        ds.SpacingBetweenSlices = f"{sz:g}"
        ds.PatientPosition = "FFS"
        position = g.index_to_world([0, 0, k])
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{position[2]:.4f}"
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]  # row spacing (y), column spacing (x)
        ds.Rows, ds.Columns = g.shape_zyx[1], g.shape_zyx[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
