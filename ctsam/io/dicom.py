"""Finding DICOM files, reading their headers once, grouping them into series, decoding pixels.

Only DICOM Part-10 files (128-byte preamble + ``DICM``) are considered; any other file below the
study folder is ignored. Only the tags ctsam uses are parsed (see :data:`HEADER_TAGS`) and the pixel
data is located but not read, so scanning costs about 2 ms per file; a file whose pixel data is
missing or runs past the end of the file is flagged (:attr:`DicomHeader.pixel_problem`).

Nothing patient-identifying is kept: :class:`DicomHeader` holds geometry, series identity and the
acquisition facts listed in :data:`ACQUISITION_TAGS` (an allow-list), never names, IDs or dates of
birth.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctsam.errors import DicomSeriesError

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

#: Acquisition facts copied into the sidecar (the allow-list; nothing else leaves the DICOM files).
ACQUISITION_TAGS: tuple[str, ...] = (
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "ProtocolName",
    "Modality",
    "ImageType",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "ConvolutionKernel",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "Exposure",
    "CTDIvol",
    "SpiralPitchFactor",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "ReconstructionDiameter",
    "GantryDetectorTilt",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "BodyPartExamined",
    "PatientPosition",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "RescaleType",
)

#: Tags needed for grouping, selection and geometry (read from every file).
_STRUCTURE_TAGS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "AcquisitionNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
)

HEADER_TAGS: tuple[str, ...] = tuple(dict.fromkeys(_STRUCTURE_TAGS + ACQUISITION_TAGS))


@dataclass(frozen=True)
class DicomHeader:
    """What ctsam needs from one DICOM file (no pixel data, no patient identity).

    Attributes:
        path: the file.
        rel: the file's path relative to the scanned folder (for messages).
        ipp_xyz_mm: ImagePositionPatient, LPS mm, or None when absent/unreadable.
        iop: ImageOrientationPatient (row cosines, then column cosines), or None.
        pixel_spacing_mm: PixelSpacing as (between rows, between columns) in mm, or None.
        acquisition: allow-listed acquisition facts (:data:`ACQUISITION_TAGS`), JSON-ready values.
    """

    path: Path
    rel: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    series_number: int | None
    acquisition_number: int | None
    instance_number: int | None
    image_type: tuple[str, ...]
    ipp_xyz_mm: tuple[float, float, float] | None
    iop: tuple[float, float, float, float, float, float] | None
    rows: int | None
    columns: int | None
    pixel_spacing_mm: tuple[float, float] | None
    number_of_frames: int
    samples_per_pixel: int
    rescale_slope: float
    rescale_intercept: float
    transfer_syntax_uid: str
    pixel_problem: str | None = None
    bits_allocated: int | None = None
    bits_stored: int | None = None
    pixel_representation: int = 0
    pixel_data_offset: int | None = None
    pixel_data_length: int | None = None
    acquisition: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_original_axial(self) -> bool:
        """ImageType says ORIGINAL (value 1) and AXIAL (any later value)."""
        return bool(self.image_type) and self.image_type[0] == "ORIGINAL" and "AXIAL" in self.image_type[1:]

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type


@dataclass(frozen=True)
class ScanResult:
    """All DICOM headers found below a folder.

    Attributes:
        headers: one per readable DICOM file, sorted by relative path.
        unreadable: ``(relative path, reason)`` for files that look like DICOM but cannot be parsed.
        n_other_files: files ignored because they are not DICOM Part-10 files.
    """

    root: Path
    headers: list[DicomHeader]
    unreadable: list[tuple[str, str]]
    n_other_files: int


@dataclass(frozen=True)
class SeriesGroup:
    """Files that form one series.

    Attributes:
        key: the SeriesInstanceUID, or ``auto-<hash>`` for files without one (see :func:`group_series`).
        grouped_by: how the group was formed (``SeriesInstanceUID`` or the fallback description).
        headers: the files, sorted by relative path.
    """

    key: str
    grouped_by: str
    headers: list[DicomHeader]

    @property
    def first(self) -> DicomHeader:
        return self.headers[0]


# ---------------------------------------------------------------------------- scanning
def is_dicom_part10(path: Path) -> bool:
    """True if ``path`` starts with a 128-byte preamble followed by ``DICM``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def scan_dicom_files(root: str | os.PathLike[str]) -> ScanResult:
    """Find and read the header of every DICOM file below ``root`` (nested folders, any names).

    Hidden files and folders (names starting with ``.``) are skipped. Files with a DICOM preamble
    whose header cannot be parsed are listed in ``unreadable`` and a warning is logged.
    """
    root = Path(root)
    if not root.is_dir():
        raise DicomSeriesError(
            "DICOM study folder not found",
            path=root,
            expected="a folder holding DICOM files (nested folders are fine)",
            found="no such folder" if not root.exists() else "a file, not a folder",
            fix="pass the study folder (not a single file) as STUDY_DIR",
        )
    candidates: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        candidates.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    headers: list[DicomHeader] = []
    unreadable: list[tuple[str, str]] = []
    n_other = 0
    from ctsam.progress import Progress

    progress = Progress(len(candidates), "reading DICOM headers")
    for path in candidates:
        progress.update()
        rel = path.relative_to(root).as_posix()
        if not is_dicom_part10(path):
            n_other += 1
            continue
        try:
            header = read_header(path, rel=rel)
            if not header.sop_class_uid:
                raise ValueError("no SOP Class UID: the header is corrupt or truncated")
        except Exception as err:  # noqa: BLE001 - any parse failure means "unreadable file"
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            log.warning("skipping unreadable DICOM file %s (%s)", rel, reason)
            unreadable.append((rel, reason))
            continue
        headers.append(header)
    log.info(
        "found %d DICOM files below %s (%d unreadable, %d other files ignored)",
        len(headers),
        root,
        len(unreadable),
        n_other,
    )
    return ScanResult(root=root, headers=headers, unreadable=unreadable, n_other_files=n_other)


def read_header(path: Path, *, rel: str | None = None) -> DicomHeader:
    """Read the tags ctsam needs from one DICOM file (no pixel data)."""
    import pydicom

    # values over 1 KiB (the pixel data) are deferred: not read, only located in the file
    ds = pydicom.dcmread(path, defer_size=1024, specific_tags=[*HEADER_TAGS, "PixelData"])
    meta = getattr(ds, "file_meta", None)
    sop_class = _str(ds, "SOPClassUID") or _str(meta, "MediaStorageSOPClassUID")
    sop_instance = _str(ds, "SOPInstanceUID") or _str(meta, "MediaStorageSOPInstanceUID")
    spacing = _floats(ds, "PixelSpacing", 2)
    # the raw element: where the pixel data sits in the file, without reading it
    pixel_elem = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    return DicomHeader(
        path=path,
        rel=rel if rel is not None else path.name,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        modality=_str(ds, "Modality").upper(),
        series_uid=_str(ds, "SeriesInstanceUID"),
        study_uid=_str(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        series_number=_int(ds, "SeriesNumber"),
        acquisition_number=_int(ds, "AcquisitionNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        image_type=tuple(v.upper() for v in _strs(ds, "ImageType")),
        ipp_xyz_mm=_floats(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        iop=_floats(ds, "ImageOrientationPatient", 6),  # type: ignore[arg-type]
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        pixel_spacing_mm=spacing,  # type: ignore[arg-type]
        number_of_frames=_int(ds, "NumberOfFrames") or 1,
        samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
        rescale_slope=_float(ds, "RescaleSlope", 1.0),
        rescale_intercept=_float(ds, "RescaleIntercept", 0.0),
        transfer_syntax_uid=_str(meta, "TransferSyntaxUID"),
        pixel_problem=_pixel_problem(ds, pixel_elem, path),
        bits_allocated=_int(ds, "BitsAllocated"),
        bits_stored=_int(ds, "BitsStored"),
        pixel_representation=_int(ds, "PixelRepresentation") or 0,
        pixel_data_offset=getattr(pixel_elem, "value_tell", None),
        pixel_data_length=getattr(pixel_elem, "length", None),
        acquisition={tag: _json_value(ds, tag) for tag in ACQUISITION_TAGS},
    )


def _pixel_problem(ds: Any, elem: Any, path: Path) -> str | None:
    """Why the file's pixel data cannot be complete (missing, or running past the end of the file)."""
    if elem is None:
        return "no pixel data (truncated file, or not an image)"
    length = getattr(elem, "length", None)
    tell = getattr(elem, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:  # already read, or encapsulated
        return None
    if tell + length > path.stat().st_size:
        return f"pixel data truncated ({path.stat().st_size - tell} of {length} bytes present)"
    rows, cols, bits = _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "BitsAllocated")
    frames, samples = _int(ds, "NumberOfFrames") or 1, _int(ds, "SamplesPerPixel") or 1
    if rows and cols and bits and length < rows * cols * frames * samples * bits // 8:
        return f"pixel data too short ({length} bytes for {rows}x{cols}x{frames} frames at {bits} bits)"
    return None


# ---------------------------------------------------------------------------- grouping
def group_series(headers: list[DicomHeader]) -> list[SeriesGroup]:
    """Group headers into series.

    Rules:

    1. Files with a non-empty SeriesInstanceUID are grouped by it.
    2. Files with an empty or missing SeriesInstanceUID are grouped by (StudyInstanceUID,
       FrameOfReferenceUID, Modality, SOP class, SeriesNumber, SeriesDescription, ConvolutionKernel,
       orientation rounded to 1e-3, Rows x Columns, PixelSpacing rounded to 1e-4 mm). Such a group
       gets the key ``auto-<12 hex digits>`` (a digest of that tuple, stable across runs).
    3. Acquisition: if a fallback group holds several slices at the same position and splitting
       it by AcquisitionNumber removes every such duplicate, it is split (e.g. a pre- and a
       post-contrast acquisition exported without UIDs). Otherwise it stays whole and the
       duplicates are reported by the geometry checks.

    Groups are returned sorted by key; headers inside a group by relative path.
    """
    by_uid: dict[str, list[DicomHeader]] = defaultdict(list)
    fallback: dict[tuple, list[DicomHeader]] = defaultdict(list)
    for h in headers:
        if h.series_uid:
            by_uid[h.series_uid].append(h)
        else:
            fallback[_fallback_key(h)].append(h)
    groups = [SeriesGroup(uid, "SeriesInstanceUID", sorted(hs, key=lambda h: h.rel)) for uid, hs in by_uid.items()]
    for fkey, hs in fallback.items():
        parts = _split_by_acquisition(hs)
        for acq, part in parts.items():
            digest_src = repr(fkey if len(parts) == 1 else (fkey, acq)).encode()
            key = "auto-" + hashlib.sha256(digest_src).hexdigest()[:12]
            how = (
                "frame of reference / orientation / rows x columns / series number and description "
                "(no SeriesInstanceUID)"
            )
            if len(parts) > 1:
                how += f", AcquisitionNumber {acq}"
            groups.append(SeriesGroup(key, how, sorted(part, key=lambda h: h.rel)))
    return sorted(groups, key=lambda g: g.key)


def _fallback_key(h: DicomHeader) -> tuple:
    iop = None if h.iop is None else tuple(round(v, 3) + 0.0 for v in h.iop)
    spacing = None if h.pixel_spacing_mm is None else tuple(round(v, 4) for v in h.pixel_spacing_mm)
    return (
        h.study_uid,
        h.frame_of_reference_uid,
        h.modality,
        h.sop_class_uid,
        h.series_number,
        h.acquisition.get("SeriesDescription"),
        repr(h.acquisition.get("ConvolutionKernel")),
        iop,
        h.rows,
        h.columns,
        spacing,
    )


def _split_by_acquisition(headers: list[DicomHeader]) -> dict[int | None, list[DicomHeader]]:
    whole = {None: headers}
    if not _has_duplicate_positions(headers):
        return whole
    parts: dict[int | None, list[DicomHeader]] = defaultdict(list)
    for h in headers:
        parts[h.acquisition_number].append(h)
    if len(parts) < 2 or any(_has_duplicate_positions(p) for p in parts.values()):
        return whole
    return dict(sorted(parts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def _has_duplicate_positions(headers: list[DicomHeader]) -> bool:
    seen = set()
    for h in headers:
        if h.ipp_xyz_mm is None:
            continue
        pos = tuple(round(v, 2) for v in h.ipp_xyz_mm)
        if pos in seen:
            return True
        seen.add(pos)
    return False


# ---------------------------------------------------------------------------- pixels
def read_pixels(header: DicomHeader) -> np.ndarray:
    """Decode the stored pixel values of one single-frame, single-sample file, shape (rows, columns).

    Values are the raw stored values (before RescaleSlope/Intercept). JPEG-2000 and JPEG-LS need
    the pylibjpeg plugins (``pylibjpeg-openjpeg``, ``pylibjpeg-libjpeg``).

    Raises:
        DicomSeriesError: the pixel data is missing, truncated, or cannot be decoded.
    """
    from pydicom.pixels import pixel_array

    fast = _read_native_16bit(header)
    if fast is not None:
        return fast
    try:
        array = pixel_array(header.path)
    except Exception as err:  # noqa: BLE001 - every decoder failure becomes one clear error
        found = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        fix = "re-export or re-copy this file from the archive"
        low = found.lower()
        if "plugin" in low or "no pixel data handler" in low or "unable to decompress" in low or "decoder" in low:
            fix = (
                f"install a decoder for transfer syntax {header.transfer_syntax_uid} "
                "(pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg), or re-export uncompressed"
            )
        raise DicomSeriesError(
            "cannot decode the pixel data of a slice of the chosen series",
            path=header.path,
            expected=f"{header.rows}x{header.columns} pixels (transfer syntax {header.transfer_syntax_uid})",
            found=found,
            fix=fix,
        ) from err
    if array.shape != (header.rows, header.columns):
        raise DicomSeriesError(
            "a slice of the chosen series has an unexpected pixel array shape",
            path=header.path,
            expected=f"({header.rows}, {header.columns}) (one frame, one sample per pixel)",
            found=str(array.shape),
            fix="ctsam converts single-frame grayscale CT slices; re-export the series as such",
        )
    return array


_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _read_native_16bit(header: DicomHeader) -> np.ndarray | None:
    """Fast path for uncompressed little-endian 16-bit slices: read the pixel bytes located at scan time.

    Gives the same values as pydicom (unsigned values masked to BitsStored, signed ones sign-extended
    from BitsStored). Returns None when the file is not of that kind, so pydicom decodes it instead.
    """
    n = (header.rows or 0) * (header.columns or 0)
    if (
        header.transfer_syntax_uid not in _NATIVE_LITTLE_ENDIAN
        or header.bits_allocated != 16
        or header.samples_per_pixel != 1
        or header.number_of_frames != 1
        or header.pixel_data_offset is None
        or header.pixel_data_length != 2 * n
        or header.pixel_problem
        or n == 0
    ):
        return None
    signed = header.pixel_representation == 1
    array = np.fromfile(header.path, dtype="<i2" if signed else "<u2", count=n, offset=header.pixel_data_offset)
    if array.size != n:
        return None
    bits = header.bits_stored or 16
    if 0 < bits < 16:
        if signed:
            shift = 16 - bits
            array = (array << shift) >> shift
        else:
            array &= (1 << bits) - 1
    return array.reshape(header.rows, header.columns).astype(array.dtype.newbyteorder("="), copy=False)


# ---------------------------------------------------------------------------- tag values
def _raw(ds: Any, keyword: str) -> Any:
    if ds is None:
        return None
    try:
        return ds.get(keyword, None)
    except Exception:  # noqa: BLE001 - a malformed element reads as absent
        log.debug("unreadable DICOM element %s", keyword)
        return None


def _str(ds: Any, keyword: str) -> str:
    value = _raw(ds, keyword)
    if value is None:
        return ""
    return str(value).strip().strip("\x00").strip()


def _strs(ds: Any, keyword: str) -> list[str]:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v).strip() for v in value]
    return [str(value).strip()]


def _int(ds: Any, keyword: str) -> int | None:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(ds: Any, keyword: str, default: float) -> float:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _floats(ds: Any, keyword: str, n: int) -> tuple[float, ...] | None:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return None
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(np.isfinite(values)):
        return None
    return values


def _json_value(ds: Any, keyword: str) -> Any:
    """A JSON-ready value (str, int, float, list, or None when absent/empty)."""
    value = _raw(ds, keyword)
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [_scalar(v) for v in value]
        return items if items else None
    return _scalar(value)


def _scalar(value: Any) -> Any:
    from pydicom.valuerep import DSfloat, IS

    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (DSfloat, float)):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").strip("\x00 ")
    return str(value).strip()
