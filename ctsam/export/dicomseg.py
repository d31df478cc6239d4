"""DICOM-SEG export of a label map whose CT came from DICOM (highdicom, LABELMAP segmentation).

PACS viewers, 3D Slicer and OHIF open the result next to the source series. The label map must lie
on the source series' voxel grid (any axis order or flips: each source slice is matched by world
position). Source headers with empty UIDs (real: ``totalseg_examples/example_ct_dicom``) are
repaired in memory before highdicom sees them: empty SOP Class UID -> the file meta's Media Storage
SOP Class UID; empty SOP Instance / Series / Study / Frame of Reference UIDs -> UIDs derived
deterministically from the files' contents; missing type 2 patient/study attributes (e.g. no
PatientBirthDate, as in the demo series) -> present and empty; an empty Specific Character Set is removed. The source
files are never modified.

By default the SEG carries the source's patient and study modules (so PACS files it with the right
study); it is meant for clinical systems, not for tables or logs. ``identity="deidentify"`` writes a
de-identified object instead (:mod:`ctsam.export.identity`). Identical inputs give identical bytes: UIDs
are derived from content hashes, and the dates/times highdicom would set to "now" are copied from
the source series.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from ctsam import __version__
from ctsam.errors import DicomSeriesError, InputDataError, SpaceMismatchError
from ctsam.volume import LabelMap

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's prefix, used by pydicom.uid.generate_uid
_POSITION_TOLERANCE_VOX = 0.05
# type 2 patient / study attributes a derived object copies (present, may be empty); some writers omit them
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(prefix=_UID_PREFIX, entropy_srcs=list(parts))


def read_source_series(dicom_dir: str | os.PathLike[str], *, case: str | None = None) -> tuple[list, list[str]]:
    """Read the CT slices of a single-series folder (sorted along the slice normal), repairing
    empty UIDs and character sets. Returns ``(datasets, repairs)`` (repairs: human-readable notes)."""
    import pydicom

    d = Path(dicom_dir)
    if not d.is_dir():
        raise InputDataError(
            "DICOM folder not found",
            case=case,
            path=d,
            fix="pass the folder of the CT series the labels were made from",
        )
    datasets, digests = [], []
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
            log.debug("skipping non-DICOM file %s", f.name)
            continue
        if str(ds.get("Modality", "")) != "CT" or "ImagePositionPatient" not in ds or "PixelData" not in ds:
            continue
        datasets.append(ds)
        digests.append(hashlib.sha256(f.read_bytes()).hexdigest())
    if not datasets:
        raise DicomSeriesError(
            "no CT image slices in the DICOM folder",
            case=case,
            path=d,
            expected="CT image files (Modality CT with pixel data)",
            found="none",
            fix="pass the folder of the CT series the labels were made from",
        )
    series_uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series_uids) > 1:
        raise DicomSeriesError(
            "the DICOM folder holds more than one CT series",
            case=case,
            path=d,
            expected="one series",
            found=f"{len(series_uids)} SeriesInstanceUIDs",
            fix="pass a folder with only the series the labels were made from",
        )
    repairs: list[str] = []
    joint = hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()
    shared = {
        "StudyInstanceUID": _uid("study", joint),
        "SeriesInstanceUID": _uid("series", joint),
        "FrameOfReferenceUID": _uid("frame-of-reference", joint),
    }
    for ds, digest in zip(datasets, digests):
        if not str(ds.get("SOPClassUID", "")):
            meta = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "") or "")
            ds.SOPClassUID = meta or CT_IMAGE_STORAGE
            _note(
                repairs,
                "SOPClassUID was empty: taken from the file meta"
                if meta
                else "SOPClassUID was empty: set to CT Image Storage",
            )
        if not str(ds.get("SOPInstanceUID", "")):
            meta = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPInstanceUID", "") or "")
            ds.SOPInstanceUID = meta or _uid("instance", digest)
            _note(
                repairs,
                "SOPInstanceUID was empty: "
                + ("taken from the file meta" if meta else "generated from the file content"),
            )
        for key, value in shared.items():
            if not str(ds.get(key, "")):
                setattr(ds, key, value)
                _note(repairs, f"{key} was empty: generated from the series content")
        for key in _TYPE2:
            if key not in ds:
                setattr(ds, key, "")
                _note(repairs, f"{key} (type 2) was missing: added empty")
        if "SpecificCharacterSet" in ds and not str(ds.SpecificCharacterSet or "").strip():
            del ds.SpecificCharacterSet
            _note(repairs, "empty SpecificCharacterSet removed")
    if str(datasets[0].SOPClassUID) not in (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE):
        raise DicomSeriesError(
            "source series is not CT Image Storage",
            case=case,
            path=d,
            expected="SOP Class CT Image Storage",
            found=str(datasets[0].SOPClassUID),
        )
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    for r in repairs:
        log.info("DICOM source repaired in memory: %s", r)
    return datasets, repairs


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def frames_from_labelmap(labelmap: LabelMap, datasets: list, *, case: str | None = None) -> np.ndarray:
    """Label values for every source slice: (n_slices, Rows, Columns), in ``datasets`` order.

    Each source pixel centre is mapped into the label map's index space; it must land on a voxel
    centre (within 0.05 voxel) of the label grid, or :class:`SpaceMismatchError` is raised.
    """
    g = labelmap.geometry
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    frames = np.zeros((len(datasets), rows, cols), dtype=labelmap.array.dtype)
    r_idx = np.arange(rows)[:, None]
    c_idx = np.arange(cols)[None, :]
    for n, ds in enumerate(datasets):
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        p0 = np.asarray(ds.ImagePositionPatient, dtype=float)
        i0 = g.world_to_index(p0)
        d_col = g.world_to_index(p0 + iop[:3] * col_spacing) - i0  # next column (along the row cosine)
        d_row = g.world_to_index(p0 + iop[3:] * row_spacing) - i0  # next row
        idx = i0[None, None, :] + r_idx[..., None] * d_row[None, None, :] + c_idx[..., None] * d_col[None, None, :]
        rounded = np.rint(idx)
        err = float(np.max(np.abs(idx - rounded)))
        lo, hi = rounded.min(axis=(0, 1)), rounded.max(axis=(0, 1))
        if err > _POSITION_TOLERANCE_VOX or lo.min() < 0 or np.any(hi >= np.asarray(g.shape_xyz)):
            raise SpaceMismatchError(
                "label map is not on the grid of the DICOM series",
                case=case,
                expected=f"a label map on the series grid ({len(datasets)} slices of {rows}x{cols})",
                found=f"{g.describe()}; slice {n} maps to label indices {lo.tolist()}..{hi.tolist()} (off-grid by {err:.3f} voxel)",
                fix="export labels made from this series (ctsam convert output grid), or resample them onto it",
            )
        ix = rounded.astype(np.int64)
        frames[n] = labelmap.array[ix[..., 2], ix[..., 1], ix[..., 0]]
    return frames


def build_segmentation(labelmap: LabelMap, datasets: list, *, case: str | None = None, transfer_syntax: str = "jpegls"):
    """A highdicom LABELMAP ``Segmentation`` of the structures present in ``labelmap``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = frames_from_labelmap(labelmap, datasets, case=case)
    present = [int(v) for v in np.unique(frames) if v != 0]
    if not present:
        raise InputDataError(
            "label map is empty on the DICOM grid", case=case, fix="check that the right label map was passed"
        )
    # segment numbers must run 1..N: remap present labels in index order
    lut = np.zeros(int(frames.max()) + 1, dtype=np.uint16 if len(present) > 255 else np.uint8)
    for n, v in enumerate(present, start=1):
        lut[v] = n
    pixel = lut[frames]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ctsam", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for n, v in enumerate(present, start=1):
        name = labelmap.labels.get(v, f"label_{v}")
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=name[:64],
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=codes.SCT.AnatomicalStructure,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=name[:64],
                tracking_uid=_uid("tracking", name, str(datasets[0].SeriesInstanceUID)),
            )
        )
    syntaxes = {
        "jpegls": "1.2.840.10008.1.2.4.80",
        "rle": "1.2.840.10008.1.2.5",
        "explicit": "1.2.840.10008.1.2.1",
    }
    content = hashlib.sha256(
        pixel.tobytes() + "|".join(labelmap.labels.get(v, "") for v in present).encode()
    ).hexdigest()
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=descriptions,
        series_instance_uid=_uid("seg-series", content, str(datasets[0].SeriesInstanceUID)),
        series_number=900,
        sop_instance_uid=_uid("seg-instance", content, str(datasets[0].SeriesInstanceUID)),
        instance_number=1,
        manufacturer="ctsam",
        manufacturer_model_name="ctsam fuse",
        software_versions=__version__,
        device_serial_number="0",
        series_description="ctsam segmentation",
        content_label="CTSAM",
        transfer_syntax_uid=syntaxes[transfer_syntax],
    )
    # deterministic dates: the source series' date/time instead of "now"
    src = datasets[0]
    date = str(src.get("SeriesDate") or src.get("StudyDate") or "19700101")
    time_ = str(src.get("SeriesTime") or src.get("StudyTime") or "000000")
    for key, value in (
        ("ContentDate", date),
        ("ContentTime", time_),
        ("SeriesDate", date),
        ("SeriesTime", time_),
        ("InstanceCreationDate", date),
        ("InstanceCreationTime", time_),
    ):
        if key in seg:
            setattr(seg, key, value)
    # highdicom draws a random dimension organisation UID and stamps "now" on its own equipment entry
    dim_uid = _uid("dimension-organization", content)
    for item in list(seg.get("DimensionOrganizationSequence", [])) + list(seg.get("DimensionIndexSequence", [])):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dim_uid
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time_.split(".")[0]
    return seg


def export_seg(
    labelmap: LabelMap,
    dicom_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    case: str | None = None,
    transfer_syntax: str = "jpegls",
    identity: str = "copy",
    uid_salt: str = "",
) -> dict:
    """Write a DICOM-SEG for ``labelmap`` referencing the series in ``dicom_dir`` (atomically).

    ``identity``: ``copy`` the source's patient/study identity, or ``deidentify`` (basic
    confidentiality profile; patient name/id = ``case``). Returns ``{"segments", "frames", "repairs"}``.
    """
    from ctsam.export.identity import apply_identity, check_mode
    from ctsam.io.atomic import atomic_path

    check_mode(identity)
    datasets, repairs = read_source_series(dicom_dir, case=case)
    seg = build_segmentation(labelmap, datasets, case=case, transfer_syntax=transfer_syntax)
    apply_identity(seg, identity, pseudonym=case, salt=uid_salt)
    with atomic_path(output) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return {"segments": len(seg.SegmentSequence), "frames": int(seg.NumberOfFrames), "repairs": repairs}
