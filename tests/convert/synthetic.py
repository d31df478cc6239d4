"""Tiny synthetic DICOM CT series, for tests and demos (written with pydicom, explicit VR little endian).

:func:`write_series` writes one series of single-frame slices and returns the HU values it stored,
so a test can compare a conversion with the truth. Geometry is fully controllable (orientation,
positions, spacing, tilt), as are identity tags (UIDs may be empty), modality and rescale.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam.io.dicom import CT_IMAGE_STORAGE

_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True)
class SyntheticSeries:
    """What :func:`write_series` wrote.

    Attributes:
        paths: one file per slice, in slice order (index k = position k).
        hu_zyx: HU values, shape (n_slices, rows, columns), slice k = ``paths[k]``, row 0 first
            (DICOM order, not yet flipped to ctsam's bottom-up NIfTI rows).
        positions_mm: ImagePositionPatient per slice, shape (n_slices, 3), LPS mm.
        series_uid: the SeriesInstanceUID written (possibly empty).
    """

    paths: list[Path]
    hu_zyx: np.ndarray
    positions_mm: np.ndarray
    series_uid: str


def tilted_orientation(tilt_deg: float) -> tuple[float, ...]:
    """ImageOrientationPatient of axial slices tilted about the x axis by ``tilt_deg``."""
    t = np.deg2rad(tilt_deg)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(-np.sin(t)))


def write_series(
    folder: str | os.PathLike[str],
    *,
    n_slices: int = 6,
    rows: int = 16,
    columns: int = 16,
    pixel_spacing_mm: tuple[float, float] = (0.8, 0.7),
    iop: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    origin_mm: Sequence[float] = (-10.0, -20.0, 30.0),
    stack_vector_mm: Sequence[float] | None = None,
    positions_mm: np.ndarray | None = None,
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.2",
    sop_uid_prefix: str | None = None,
    modality: str = "CT",
    sop_class_uid: str | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    series_number: int | None = 1,
    series_description: str = "synthetic CT",
    acquisition_number: int | None = 1,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    seed: int = 0,
    name: str = "slice{k:03d}.dcm",
    extra_tags: dict | None = None,
) -> SyntheticSeries:
    """Write a series of ``n_slices`` single-frame slices into ``folder`` (created if needed).

    Slice ``k`` lies at ``origin_mm + k * stack_vector_mm`` (default: 2.5 mm along the slice normal),
    unless ``positions_mm`` (shape (n, 3)) is given. HU values are random integers in [-1000, 1500)
    (plus 100 k so slices differ), stored as ``(HU - intercept) / slope`` in uint16, or in int16
    (PixelRepresentation 1) when some stored values are negative.
    ``series_uid=None`` makes a UID from ``seed``; ``""`` writes an empty one (as some exports do).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(r, c)
    if positions_mm is None:
        vec = normal * 2.5 if stack_vector_mm is None else np.asarray(stack_vector_mm, float)
        positions_mm = np.asarray(origin_mm, float) + np.arange(n_slices)[:, None] * vec
    positions_mm = np.asarray(positions_mm, float)
    n_slices = len(positions_mm)
    if series_uid is None:
        series_uid = f"1.2.826.0.1.3680043.8.498.{1000 + seed}"
    sop_prefix = sop_uid_prefix if sop_uid_prefix is not None else f"1.2.826.0.1.3680043.8.498.{1000 + seed}.1"
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1500, size=(n_slices, rows, columns)).astype(np.int32)
    hu += 100 * np.arange(n_slices)[:, None, None]
    stored = np.rint((hu - rescale_intercept) / rescale_slope)
    signed = bool(stored.min() < 0)  # store as int16 (PixelRepresentation 1) when values are negative
    if (signed and (stored.min() < -32768 or stored.max() > 32767)) or stored.max() > 65535:
        raise ValueError("rescale parameters give stored values outside 16 bits")
    hu = (stored * rescale_slope + rescale_intercept).astype(np.float64)
    sop_class = sop_class_uid or (CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE)
    paths = []
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = f"{sop_prefix}.{k + 1}" if sop_prefix else f"1.2.3.{seed}.{k + 1}"
        meta.TransferSyntaxUID = _EXPLICIT_VR_LITTLE_ENDIAN
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = f"{sop_prefix}.{k + 1}" if sop_prefix else ""
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.Modality = modality
        ds.ImageType = list(image_type)
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.AcquisitionNumber = acquisition_number
        ds.InstanceNumber = k + 1
        ds.StudyDate = "20200102"
        ds.Manufacturer = "SYNTHETIC"
        ds.ManufacturerModelName = "ctsam.convert.synthetic"
        ds.ConvolutionKernel = "B30f"
        ds.KVP = 120
        ds.SliceThickness = 2.5
        ds.ContrastBolusAgent = ""
        ds.ImagePositionPatient = [_ds(v) for v in positions_mm[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.PixelSpacing = [_ds(v) for v in pixel_spacing_mm]
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = _ds(rescale_slope)
        ds.RescaleIntercept = _ds(rescale_intercept)
        ds.PatientName = "DOE^JANE"
        ds.PatientID = "PHI-123456"
        ds.PatientBirthDate = "19700101"
        ds.InstitutionAddress = "1 Hospital Road"
        for key, value in (extra_tags or {}).items():
            setattr(ds, key, value)
        ds.PixelData = stored[k].astype("<i2" if signed else "<u2").tobytes()
        path = folder / name.format(k=k)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return SyntheticSeries(paths=paths, hu_zyx=hu, positions_mm=positions_mm, series_uid=series_uid)


def _ds(value: float):
    """A DICOM decimal string value (at most 16 characters)."""
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)
