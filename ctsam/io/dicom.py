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
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ctsam.errors import DicomSeriesError

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
#: SOP classes whose files hold many frames, each with its own geometry in functional groups.
MULTIFRAME_CT_CLASSES = (ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

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
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
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
        frame_index: for one frame of a multi-frame (Enhanced CT) file, the frame's 0-based index;
            None for a single-frame file. Geometry, rescale and ImageType are then the frame's own
            (from the per-frame and shared functional groups).
        frame_stack: for a frame, its StackID and TemporalPositionIndex (frames of different
            stacks or time points are never mixed); empty otherwise.
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
    frame_index: int | None = None
    frame_stack: str = ""

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
        key: the SeriesInstanceUID, or ``auto-<hash>`` for files without one (see :func:`group_series`);
            ``<series key>#<n>`` for the n-th stack of a series split into stacks.
        grouped_by: how the group was formed (``SeriesInstanceUID`` or the fallback description).
        headers: the files (or frames), sorted by relative path.
        series_key: for a stack of a split series, the series' key; empty otherwise.
    """

    key: str
    grouped_by: str
    headers: list[DicomHeader]
    series_key: str = ""

    @property
    def first(self) -> DicomHeader:
        return self.headers[0]

    @property
    def series(self) -> str:
        """The series this group belongs to (its own key unless it is one stack of a split series)."""
        return self.series_key or self.key


# ---------------------------------------------------------------------------- scanning
def is_dicom_part10(path: Path) -> bool:
    """True if ``path`` starts with a 128-byte preamble followed by ``DICM``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


#: the header scan uses processes only for this many files or more, on a machine with >= 4 CPUs
PARALLEL_SCAN_MIN_FILES = 256


def scan_dicom_files(root: str | os.PathLike[str], *, workers: int | None = None) -> ScanResult:
    """Find and read the header of every DICOM file below ``root`` (nested folders, any names).

    Hidden files and folders (names starting with ``.``) are skipped. Files with a DICOM preamble
    whose header cannot be parsed are listed in ``unreadable`` and a warning is logged.

    Args:
        workers: processes reading headers (pydicom parsing holds the GIL, so threads would not
            help). Default: one per CPU (at most 8) for :data:`PARALLEL_SCAN_MIN_FILES` files or more
            on a machine with 4 CPUs or more, else 1. The result does not depend on it.
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
    from ctsam.progress import Progress

    progress = Progress(len(candidates), "reading DICOM headers")
    n_workers = workers if workers is not None else _default_scan_workers(len(candidates))
    headers: list[DicomHeader] = []
    unreadable: list[tuple[str, str]] = []
    n_other = 0
    for part_headers, part_unreadable, part_other, n in _scan_parts(root, candidates, n_workers):
        headers.extend(part_headers)
        unreadable.extend(part_unreadable)
        n_other += part_other
        progress.update(n)
    log.info(
        "found %d DICOM files below %s (%d unreadable, %d other files ignored)",
        len(headers),
        root,
        len(unreadable),
        n_other,
    )
    return ScanResult(root=root, headers=headers, unreadable=unreadable, n_other_files=n_other)


def _default_scan_workers(n_files: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    if n_files < PARALLEL_SCAN_MIN_FILES or cpus < 4:
        return 1
    return min(8, cpus)


def _scan_parts(root: Path, paths: list[Path], workers: int):
    """Yield ``(headers, unreadable, n_other, n_files)`` for consecutive parts of ``paths``, in order."""
    import multiprocessing

    if workers <= 1 or len(paths) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for i in range(0, len(paths), 64):
            yield (*_scan_files(root, paths[i : i + 64]), len(paths[i : i + 64]))
        return
    from concurrent.futures import ProcessPoolExecutor

    size = max(1, -(-len(paths) // (4 * workers)))
    parts = [paths[i : i + size] for i in range(0, len(paths), size)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for part, result in zip(parts, pool.map(_scan_files, [root] * len(parts), parts)):
            yield (*result, len(part))


def _scan_files(root: Path, paths: list[Path]) -> tuple[list[DicomHeader], list[tuple[str, str]], int]:
    headers: list[DicomHeader] = []
    unreadable: list[tuple[str, str]] = []
    n_other = 0
    for path in paths:
        rel = path.relative_to(root).as_posix()
        if not is_dicom_part10(path):
            n_other += 1
            continue
        try:
            found = read_headers(path, rel=rel)
            if not found or not found[0].sop_class_uid:
                raise ValueError("no SOP Class UID: the header is corrupt or truncated")
        except Exception as err:  # noqa: BLE001 - any parse failure means "unreadable file"
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            log.warning("skipping unreadable DICOM file %s (%s)", rel, reason)
            unreadable.append((rel, reason))
            continue
        headers.extend(found)
    return headers, unreadable, n_other


def read_header(path: Path, *, rel: str | None = None) -> DicomHeader:
    """Read the tags ctsam needs from one DICOM file (no pixel data); a multi-frame file as a whole."""
    return _file_header(_read_dataset(path), path, rel)


def read_headers(path: Path, *, rel: str | None = None) -> list[DicomHeader]:
    """The slices of one DICOM file: the file itself, or one header per frame of a multi-frame CT file.

    Frames of Enhanced CT and Legacy Converted Enhanced CT files take position, orientation, pixel
    spacing, rescale, ImageType (FrameType) and kernel from their per-frame functional group, else
    from the shared one, else from the top-level attributes.
    """
    ds = _read_dataset(path)
    header = _file_header(ds, path, rel)
    if header.sop_class_uid in MULTIFRAME_CT_CLASSES and "PerFrameFunctionalGroupsSequence" in ds:
        return _frame_headers(ds, header)
    return [header]


def _read_dataset(path: Path) -> Any:
    import pydicom

    # values over 1 KiB (the pixel data) are deferred: not read, only located in the file
    return pydicom.dcmread(path, defer_size=1024, specific_tags=[*HEADER_TAGS, "PixelData"])


def _file_header(ds: Any, path: Path, rel: str | None) -> DicomHeader:
    meta = getattr(ds, "file_meta", None)
    sop_class = _str(ds, "SOPClassUID") or _str(meta, "MediaStorageSOPClassUID")
    sop_instance = _str(ds, "SOPInstanceUID") or _str(meta, "MediaStorageSOPInstanceUID")
    spacing = _floats(ds, "PixelSpacing", 2)
    syntax = _str(meta, "TransferSyntaxUID")
    # the raw element: where the pixel data sits in the file, without reading it
    pixel_elem = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    # a deflated file's offsets are positions in the inflated stream, not in the file
    located = syntax != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
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
        transfer_syntax_uid=syntax,
        pixel_problem=_pixel_problem(ds, pixel_elem, path) if located else _missing_pixels(pixel_elem),
        bits_allocated=_int(ds, "BitsAllocated"),
        bits_stored=_int(ds, "BitsStored"),
        pixel_representation=_int(ds, "PixelRepresentation") or 0,
        pixel_data_offset=getattr(pixel_elem, "value_tell", None) if located else None,
        pixel_data_length=getattr(pixel_elem, "length", None) if located else None,
        acquisition={tag: _json_value(ds, tag) for tag in ACQUISITION_TAGS},
    )


def _frame_headers(ds: Any, header: DicomHeader) -> list[DicomHeader]:
    """One header per frame of a multi-frame CT file (functional groups: per-frame, then shared)."""
    import dataclasses

    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    frames = _raw(ds, "PerFrameFunctionalGroupsSequence") or []
    out: list[DicomHeader] = []
    for k, item in enumerate(frames):
        groups = (item, shared)

        def macro(seq: str, groups: tuple = groups) -> Any:
            for g in groups:
                found = _first_item(g, seq)
                if found is not None:
                    return found
            return None

        position = macro("PlanePositionSequence")
        orientation = macro("PlaneOrientationSequence")
        measures = macro("PixelMeasuresSequence")
        transform = macro("PixelValueTransformationSequence")
        frame_type = macro("CTImageFrameTypeSequence")
        content = macro("FrameContentSequence")
        recon = macro("CTReconstructionSequence")
        acquisition = dict(header.acquisition)
        for converted in (
            _first_item(shared, "UnassignedSharedConvertedAttributesSequence"),
            _first_item(item, "UnassignedPerFrameConvertedAttributesSequence"),
        ):
            for tag in ACQUISITION_TAGS:  # legacy converted: the classic files' attributes
                if converted is not None and acquisition.get(tag) is None and _json_value(converted, tag) is not None:
                    acquisition[tag] = _json_value(converted, tag)
        if _str(recon, "ConvolutionKernel"):
            acquisition["ConvolutionKernel"] = _json_value(recon, "ConvolutionKernel")
        if measures is not None:
            for tag in ("SliceThickness", "PixelSpacing"):
                if _json_value(measures, tag) is not None:
                    acquisition[tag] = _json_value(measures, tag)
        types = _strs(frame_type, "FrameType") if frame_type is not None else []
        stack_id = _str(content, "StackID")
        temporal = _int(content, "TemporalPositionIndex")
        out.append(
            dataclasses.replace(
                header,
                rel=f"{header.rel} [frame {k + 1}]",
                instance_number=_int(content, "InStackPositionNumber") or k + 1,
                image_type=tuple(v.upper() for v in types) or header.image_type,
                ipp_xyz_mm=_floats(position, "ImagePositionPatient", 3) or header.ipp_xyz_mm,  # type: ignore[arg-type]
                iop=_floats(orientation, "ImageOrientationPatient", 6) or header.iop,  # type: ignore[arg-type]
                pixel_spacing_mm=_floats(measures, "PixelSpacing", 2) or header.pixel_spacing_mm,  # type: ignore[arg-type]
                rescale_slope=_float(transform, "RescaleSlope", header.rescale_slope),
                rescale_intercept=_float(transform, "RescaleIntercept", header.rescale_intercept),
                acquisition=acquisition,
                frame_index=k,
                frame_stack="" if not stack_id and temporal is None else f"stack {stack_id or '-'}, time {temporal}",
            )
        )
    return out


def _first_item(ds: Any, keyword: str) -> Any:
    seq = _raw(ds, keyword)
    try:
        return seq[0] if seq else None
    except (TypeError, IndexError):
        return None


def _missing_pixels(elem: Any) -> str | None:
    return "no pixel data (truncated file, or not an image)" if elem is None else None


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
    whole: dict[int | None, list[DicomHeader]] = {None: headers}
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
#: Transfer syntaxes with compressed pixel data: name, and the pip packages that decode them.
TRANSFER_SYNTAXES: dict[str, tuple[str, str]] = {
    "1.2.840.10008.1.2": ("Implicit VR Little Endian", "pydicom"),
    "1.2.840.10008.1.2.1": ("Explicit VR Little Endian", "pydicom"),
    "1.2.840.10008.1.2.1.99": ("Deflated Explicit VR Little Endian", "pydicom"),
    "1.2.840.10008.1.2.2": ("Explicit VR Big Endian", "pydicom"),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "pydicom (faster: pylibjpeg-rle)"),
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline (Process 1)", "pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (Process 2 & 4)", "pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless, Non-Hierarchical (Process 14)", "pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.70": (
        "JPEG Lossless, First-Order Prediction (Process 14 SV1)",
        "pylibjpeg-libjpeg or python-gdcm",
    ),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", "pyjpegls, pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", "pyjpegls, pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", "pylibjpeg-openjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", "pylibjpeg-openjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.201": ("High-Throughput JPEG 2000 Lossless", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.202": ("High-Throughput JPEG 2000 with RPCL Lossless", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.203": ("High-Throughput JPEG 2000", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.110": ("JPEG XL Lossless", "none for pydicom 3.0 (re-export with another syntax)"),
    "1.2.840.10008.1.2.4.111": ("JPEG XL JPEG Recompression", "none for pydicom 3.0 (re-export with another syntax)"),
    "1.2.840.10008.1.2.4.112": ("JPEG XL", "none for pydicom 3.0 (re-export with another syntax)"),
}


def transfer_syntax_name(uid: str) -> str:
    """``"<name> (<uid>)"``, or the UID alone when unknown."""
    known = TRANSFER_SYNTAXES.get(uid)
    if known:
        return f"{known[0]} ({uid})"
    try:
        from pydicom.uid import UID

        name = UID(uid).name
        return f"{name} ({uid})" if name and name != uid else uid or "(no transfer syntax)"
    except Exception:  # noqa: BLE001
        return uid or "(no transfer syntax)"


def decoder_problem(uid: str) -> str | None:
    """Why pydicom with the installed plugins cannot decode ``uid``, naming the package to install; None if it can."""
    if uid in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN):
        return None
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        decoder = None
    package = TRANSFER_SYNTAXES.get(uid, ("", "no known Python package"))[1]
    if decoder is None:
        return f"pydicom has no decoder for transfer syntax {transfer_syntax_name(uid)} (decoders: {package})"
    if not decoder.is_available:
        return (
            f"no decoder plugin is installed for transfer syntax {transfer_syntax_name(uid)}; "
            f"it is decoded by {package} (pip install {package.split(' ')[0].rstrip(',')})"
        )
    return None


def read_pixels(header: DicomHeader) -> np.ndarray:
    """Decode the stored pixel values of one slice (a single-frame file, or one frame), shape (rows, columns).

    Values are the raw stored values (before RescaleSlope/Intercept). Compressed transfer syntaxes
    need the decoder plugins listed in :data:`TRANSFER_SYNTAXES`.

    Raises:
        DicomSeriesError: the pixel data is missing, truncated, cannot be decoded, or no decoder
            for its transfer syntax is installed (the error names the syntax and the package).
    """
    fast = _read_native_16bit(header)
    if fast is not None:
        return fast
    array = decode_file(header)
    if header.frame_index is not None:
        array = array[header.frame_index] if array.ndim == 3 else array
    return _check_shape(array, header)


def decode_file(header: DicomHeader) -> np.ndarray:
    """Decode every frame of ``header``'s file: shape (rows, columns), or (frames, rows, columns)."""
    missing = decoder_problem(header.transfer_syntax_uid)
    if missing:
        raise DicomSeriesError(
            "cannot decode the pixel data of a slice of the chosen series",
            path=header.path,
            expected=f"a transfer syntax with an installed decoder (this file: {transfer_syntax_name(header.transfer_syntax_uid)})",
            found=missing,
            fix="install the package named above (pip install ...), or re-export the series uncompressed",
        )
    try:
        if header.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            import pydicom

            array = pydicom.dcmread(header.path).pixel_array  # the whole dataset is deflated
        else:
            from pydicom.pixels import pixel_array

            array = pixel_array(header.path)
    except Exception as err:
        found = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        raise DicomSeriesError(
            "cannot decode the pixel data of a slice of the chosen series",
            path=header.path,
            expected=f"{header.rows}x{header.columns} pixels ({transfer_syntax_name(header.transfer_syntax_uid)})",
            found=found,
            fix="the file's pixel data is damaged: re-export or re-copy this file from the archive",
        ) from err
    return array


def _check_shape(array: np.ndarray, header: DicomHeader) -> np.ndarray:
    if array.shape != (header.rows, header.columns):
        raise DicomSeriesError(
            "a slice of the chosen series has an unexpected pixel array shape",
            path=header.path,
            expected=f"({header.rows}, {header.columns}) (one frame, one sample per pixel)",
            found=str(array.shape),
            fix="ctsam converts grayscale CT slices; re-export the series as such",
        )
    return array


_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _read_native_16bit(header: DicomHeader) -> np.ndarray | None:
    """Fast path for uncompressed little-endian 16-bit slices: read the pixel bytes located at scan time.

    Gives the same values as pydicom (unsigned values masked to BitsStored, signed ones sign-extended
    from BitsStored). Returns None when the file is not of that kind, so pydicom decodes it instead.
    """
    n = (header.rows or 0) * (header.columns or 0)
    frames = header.number_of_frames
    if (
        header.transfer_syntax_uid not in _NATIVE_LITTLE_ENDIAN
        or header.bits_allocated != 16
        or header.samples_per_pixel != 1
        or (frames != 1 and header.frame_index is None)
        or header.pixel_data_offset is None
        or header.pixel_data_length is None
        or header.pixel_data_length < 2 * n * frames
        or header.pixel_problem
        or n == 0
    ):
        return None
    signed = header.pixel_representation == 1
    offset = header.pixel_data_offset + 2 * n * (header.frame_index or 0)
    array = np.fromfile(header.path, dtype="<i2" if signed else "<u2", count=n, offset=offset)
    if array.size != n:
        return None
    bits = header.bits_stored or 16
    if 0 < bits < 16:
        if signed:
            shift = 16 - bits
            array = (array << shift) >> shift
        else:
            array &= (1 << bits) - 1
    return array.reshape(int(header.rows or 0), int(header.columns or 0)).astype(
        array.dtype.newbyteorder("="), copy=False
    )


# ---------------------------------------------------------------------------- tag values
#: decode simple raw elements directly (same values as pydicom's conversion, ~3x cheaper per header);
#: anything unusual falls back to pydicom. tests/io/test_dicom.py checks both give equal headers.
_FAST_RAW = True
_TEXT_VRS = frozenset({"CS", "UI", "LO", "SH", "DS", "IS", "DA", "TM", "DT", "AS", "LT", "ST"})
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


@cache
def _tag_of(keyword: str) -> int | None:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(keyword)


@cache
def _dictionary_vr(tag: int) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _raw(ds: Any, keyword: str) -> Any:
    if ds is None:
        return None
    if _FAST_RAW:
        fast = _fast_value(ds, keyword)
        if fast is not _SLOW:
            return fast
    try:
        return ds.get(keyword, None)
    except Exception:  # noqa: BLE001 - a malformed element reads as absent
        log.debug("unreadable DICOM element %s", keyword)
        return None


_SLOW = object()


def _fast_value(ds: Any, keyword: str) -> Any:
    """The value of a not-yet-converted simple element, decoded here; ``_SLOW`` for anything else."""
    import struct

    tag = _tag_of(keyword)
    if tag is None:
        return _SLOW
    elements = getattr(ds, "_dict", None)  # the dataset's {tag: element}; an int looks up a BaseTag key
    if not isinstance(elements, dict):
        return _SLOW
    elem = elements.get(tag)
    if elem is None:
        return None
    if not getattr(elem, "is_raw", False):
        return _SLOW  # already converted (or a sequence): pydicom's value
    vr = elem.VR or _dictionary_vr(tag)
    if vr not in _TEXT_VRS and vr not in _BINARY_VRS:
        return _SLOW  # sequences, pixel data, person names ...: pydicom
    value = elem.value
    if value is None or value == b"":
        return None
    if not isinstance(value, bytes) or vr is None:
        return _SLOW
    try:
        if vr in _TEXT_VRS:
            if max(value) >= 0x80:
                return _SLOW  # character sets: pydicom decodes them
            parts = [p.strip(" \x00") for p in value.decode("ascii").split("\\")]
            if vr in ("DS", "IS"):
                if any(not p for p in parts):
                    return _SLOW
                nums: list[Any] = [float(p) for p in parts] if vr == "DS" else [_int_string(p) for p in parts]
                return nums[0] if len(nums) == 1 else nums
            return parts[0] if len(parts) == 1 else parts
        if vr in _BINARY_VRS:
            code = _BINARY_VRS[vr]
            size = struct.calcsize(code)
            if len(value) % size:
                return _SLOW
            order = "<" if elem.is_little_endian else ">"
            numbers = struct.unpack(f"{order}{len(value) // size}{code}", value)
            return numbers[0] if len(numbers) == 1 else list(numbers)
    except (ValueError, UnicodeDecodeError):
        return _SLOW
    return _SLOW


def _int_string(text: str) -> int:
    number = float(text)
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


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
    from pydicom.valuerep import IS, DSfloat

    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (DSfloat, float)):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").strip("\x00 ")
    return str(value).strip()
