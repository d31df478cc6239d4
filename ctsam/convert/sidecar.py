"""The JSON sidecar written next to a converted CT.

It holds acquisition facts a data team needs and how the series was chosen. Only allow-listed
DICOM attributes (:data:`ctsam.io.dicom.ACQUISITION_TAGS`) are copied; no patient name, ID, birth
date, address, accession number, institution or file path is ever written, and nothing that
changes between runs (no timestamps), so the same study gives the same bytes.
"""

from __future__ import annotations

from typing import Any

from ctsam import __version__
from ctsam.convert.geometry import SliceStack
from ctsam.convert.selection import Selection
from ctsam.convert.volume import VolumeReport
from ctsam.io.dicom import ACQUISITION_TAGS, ScanResult
from ctsam.volume import Geometry

SIDECAR_FORMAT = "ctsam-convert-sidecar/1"


def _consensus(stack: SliceStack, tag: str) -> Any:
    """The tag's value if all slices agree; else ``{"varies_per_slice": true, "min": .., "max": ..}`` for
    numbers, or ``{"varies_per_slice": true, "values": [distinct values in slice order]}``."""
    values: list[Any] = []
    for h in stack.headers:
        v = h.acquisition.get(tag)
        if v not in values:
            values.append(v)
    if len(values) == 1:
        return values[0]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {"varies_per_slice": True, "min": min(values), "max": max(values)}
    return {"varies_per_slice": True, "values": values}


def build_sidecar(
    *,
    scan: ScanResult,
    selection: Selection,
    stack: SliceStack,
    geometry: Geometry,
    report: VolumeReport,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The sidecar as a JSON-ready dict (see module docstring for what is, and is not, included)."""
    dicom = {tag: _consensus(stack, tag) for tag in ACQUISITION_TAGS}
    kernel = dicom.get("ConvolutionKernel")
    return {
        "format": SIDECAR_FORMAT,
        "ctsam_version": __version__,
        "series_instance_uid": dicom.get("SeriesInstanceUID"),
        "series_key": selection.chosen.key,
        "modality": dicom.get("Modality"),
        "manufacturer": dicom.get("Manufacturer"),
        "manufacturer_model_name": dicom.get("ManufacturerModelName"),
        "convolution_kernel": kernel,
        "kvp": dicom.get("KVP"),
        "slice_thickness_mm": dicom.get("SliceThickness"),
        "contrast_bolus_agent": dicom.get("ContrastBolusAgent"),
        "study_date": dicom.get("StudyDate"),
        "n_slices": stack.n_slices,
        "shape_zyx": list(geometry.shape_zyx),
        "spacing_xyz_mm": [round(v, 6) for v in geometry.spacing_xyz_mm],
        "slice_step_mm": round(stack.step_mm, 6),
        "geometry": {
            "origin_xyz_mm": [round(v, 6) for v in geometry.origin_xyz_mm],
            "direction": [[round(v, 8) for v in row] for row in geometry.direction],
            "frame": "LPS; column c of direction is index axis c (x, y, z)",
        },
        "gantry_tilt": {
            "angle_deg": round(stack.tilt_deg, 4),
            "tilted": stack.tilted,
            "dicom_gantry_detector_tilt_deg": dicom.get("GantryDetectorTilt"),
            "resampled": report.tilt_resampled,
            "padded_voxels": report.padded_voxels,
            "fill_hu": report.fill_hu,
        },
        "hu": {
            "dtype": report.hu_dtype,
            "storage": report.hu_storage,
            "nifti_scl_slope_inter": None if report.scl_slope_inter is None else list(report.scl_slope_inter),
            "rescale_slope_intercept": [list(p) for p in report.rescale],
            "clipped_voxels": report.clipped_voxels,
            "beyond_int16_voxels": report.beyond_int16_voxels,
        },
        "uneven_spacing": report.uneven or {"resampled": False},
        "dicom": dicom,
        "selection": {
            "chosen": {**selection.chosen.summary(), "why": selection.why},
            "rejected": [{**c.summary(), "reasons": reasons} for c, reasons in selection.rejected],
            "rules": (
                "candidates are stacks (series split by orientation, size, pixel spacing, ImageType); eligible: "
                "modality CT, CT Image Storage or (Legacy Converted) Enhanced CT, grayscale, not LOCALIZER, "
                ">= min_slices distinct positions; ranked by ORIGINAL/AXIAL, then kernel (convert.prefer_kernels, "
                "soft tissue/standard, medium, unknown, sharp), then coverage along the normal (within one step), "
                "then thinnest slice step, then key (a tie is warned); --series-uid overrides"
            ),
        },
        "files": {
            "dicom_files_found": len(scan.headers),
            "unreadable_files_skipped": len(scan.unreadable),
            "other_files_ignored": scan.n_other_files,
        },
        "settings": settings,
    }
