"""User-supplied coarse labels: a multi-label image or a folder of per-class masks, with names.

Accepted inputs:

* a multi-label NIfTI/NRRD/MHA file. Names come from, in order: ``label_table`` (a TSV
  ``index<TAB>name``), the ``.tsv`` sidecar beside the file, the NIfTI header XML
  (TotalSegmentator/Slicer), or Slicer ``.seg.nrrd`` segment fields
  (``SegmentN_Name`` / ``SegmentN_LabelValue``);
* a folder of binary masks ``<name>.nii.gz`` (also ``.nii``, ``.nrrd``, ``.mha``), e.g.
  TotalSegmentator's default per-class output. All masks must share one grid.

The label grid must equal the CT grid. When only the sampling differs (same orientation, same
physical extent, different spacing/shape) the labels are resampled by nearest neighbour if allowed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam import labels as catalogue
from ctsam.errors import InputDataError, SpaceMismatchError
from ctsam.io.image import read_image, read_labelmap
from ctsam.io.labeltable import read_label_tsv
from ctsam.volume import Geometry, check_same_space, smallest_label_dtype

log = logging.getLogger(__name__)

_MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class UserLabels:
    """A user label map as read: values, names and grid, before relabelling.

    Attributes:
        array: (z, y, x) integer labels.
        geometry: its voxel grid.
        labels: ``{value: name}`` as supplied.
        source: a short description of where the names came from.
        overlap_voxels: for mask folders, voxels claimed by more than one mask (first wins).
    """

    array: np.ndarray
    geometry: Geometry
    labels: dict[int, str]
    source: str
    overlap_voxels: int = 0


def _strip_suffix(name: str) -> str | None:
    for suffix in _MASK_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _nrrd_segment_names(path: Path) -> dict[int, str] | None:
    """Label names from Slicer segmentation NRRD fields, or None."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    keys = set(reader.GetMetaDataKeys())
    out: dict[int, str] = {}
    i = 0
    while f"Segment{i}_Name" in keys:
        value_key = f"Segment{i}_LabelValue"
        layer_key = f"Segment{i}_Layer"
        if layer_key in keys and reader.GetMetaData(layer_key).strip() not in ("", "0"):
            raise InputDataError(
                "multi-layer Slicer segmentation (overlapping segments) is not supported",
                path=path,
                expected="a single-layer .seg.nrrd",
                found=f"segment {i} on layer {reader.GetMetaData(layer_key)}",
                fix="export a labelmap from Slicer (Segmentations > Export to files, labelmap) or a mask folder",
            )
        value = int(reader.GetMetaData(value_key)) if value_key in keys else i + 1
        out[value] = reader.GetMetaData(f"Segment{i}_Name").strip()
        i += 1
    return out or None


def read_user_labels(
    path: str | os.PathLike[str],
    *,
    label_table: str | os.PathLike[str] | None = None,
    case: str | None = None,
) -> UserLabels:
    """Read a label file or a folder of masks with its names (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return _read_mask_folder(path, case=case)
    if not path.exists():
        raise InputDataError(
            "label map not found",
            case=case,
            path=path,
            expected="a label file (NIfTI/NRRD) or a folder of <name>.nii.gz masks",
            found="no such file or folder",
            fix="check --labels",
        )
    table: dict[int, str] | None = None
    source = ""
    if label_table is not None:
        table = read_label_tsv(label_table)
        source = f"label table {Path(label_table).name}"
    elif path.name.endswith((".nrrd", ".nhdr")):
        table = _nrrd_segment_names(path)
        source = "Slicer segment fields in the NRRD header" if table else ""
    lm = read_labelmap(path, case=case, labels=table)
    if not source:
        from ctsam.io.labeltable import sidecar_tsv_path

        source = "tsv sidecar" if sidecar_tsv_path(path).exists() else "NIfTI header label table"
    present = lm.present_labels()
    named = [v for v in present if lm.labels.get(v) != f"label_{v}"]
    if present and not named:
        raise InputDataError(
            "label map has no label names",
            case=case,
            path=path,
            expected="names for the label values: a .tsv sidecar, a header label table, or --label-table",
            found=f"{len(present)} label values without names",
            fix="pass --label-table TABLE.tsv with lines 'index<TAB>name' (names such as liver, kidney_left)",
        )
    return UserLabels(lm.array, lm.geometry, dict(lm.labels), source)


def _read_mask_folder(folder: Path, *, case: str | None) -> UserLabels:
    files = sorted(p for p in folder.iterdir() if p.is_file() and _strip_suffix(p.name))
    if not files:
        raise InputDataError(
            "mask folder holds no masks",
            case=case,
            path=folder,
            expected="files <name>.nii.gz (one binary mask per class)",
            found="no .nii.gz/.nii/.nrrd/.mha files",
            fix="point --labels at the folder with the masks",
        )

    def order(p: Path) -> tuple[int, str]:
        m = catalogue.match_name(_strip_suffix(p.name) or "")
        return (catalogue.coarse_id(m.name) if m.known else 10_000, p.name)

    files.sort(key=order)  # catalogue order first: deterministic "first wins" on overlaps
    geometry: Geometry | None = None
    first_file: Path | None = None
    out: np.ndarray | None = None
    table: dict[int, str] = {}
    overlap = 0
    for value, f in enumerate(files, start=1):
        mask, g, _ = read_image(f, case=case)
        if geometry is None:
            geometry, first_file = g, f
            out = np.zeros(g.shape_zyx, dtype=smallest_label_dtype(len(files)))
        else:
            check_same_space(geometry, g, name_a=f"mask {first_file.name}", name_b=f"mask {f.name}", case=case)
        on = mask != 0
        taken = on & (out != 0)
        overlap += int(taken.sum())
        out[on & ~taken] = value
        table[value] = _strip_suffix(f.name) or f.name
    if overlap:
        log.warning(
            "%d voxels are claimed by more than one mask in %s; the first mask (catalogue order) wins", overlap, folder
        )
    return UserLabels(out, geometry, table, f"mask folder ({len(files)} files)", overlap)


# ---------------------------------------------------------------------------- geometry
def _edge_corners(g: Geometry) -> np.ndarray:
    """World (LPS mm) positions of the outer voxel-edge corners (index -0.5 and n-0.5)."""
    nx, ny, nz = g.shape_xyz
    lo, hx, hy, hz = -0.5, nx - 0.5, ny - 0.5, nz - 0.5
    idx = np.array([[lo, lo, lo], [hx, lo, lo], [lo, hy, lo], [lo, lo, hz], [hx, hy, hz]])
    return g.index_to_world(idx)


def only_grid_differs(ct: Geometry, lab: Geometry, *, extent_tolerance_mm: float) -> bool:
    """True if both grids have the same orientation and physical extent (spacing/shape may differ)."""
    if np.max(np.abs(ct.direction_matrix - lab.direction_matrix)) > 1e-4:
        return False
    return bool(np.max(np.abs(_edge_corners(ct) - _edge_corners(lab))) <= extent_tolerance_mm)


def resample_nearest(array: np.ndarray, src: Geometry, dst: Geometry) -> np.ndarray:
    """Nearest-neighbour resampling of a (z, y, x) label array from ``src`` onto ``dst``.

    Both grids must share their direction cosines (so each axis maps independently).
    Voxels of ``dst`` outside ``src`` take the nearest edge voxel.
    """
    d = dst.direction_matrix
    offset_axes = d.T @ (np.asarray(dst.origin_xyz_mm) - np.asarray(src.origin_xyz_mm))
    index_arrays = []
    for axis in range(3):  # x, y, z
        n_dst = dst.shape_xyz[axis]
        cont = (offset_axes[axis] + np.arange(n_dst) * dst.spacing_xyz_mm[axis]) / src.spacing_xyz_mm[axis]
        index_arrays.append(np.clip(np.floor(cont + 0.5).astype(np.int64), 0, src.shape_xyz[axis] - 1))
    ix, iy, iz = index_arrays
    return np.ascontiguousarray(array[np.ix_(iz, iy, ix)])


def fit_to_ct_grid(
    user: UserLabels,
    ct: Geometry,
    *,
    allow_resample: bool,
    extent_tolerance_mm: float,
    case: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, bool]:
    """Return ``(array on the CT grid, resampled?)`` or raise :class:`SpaceMismatchError`."""
    if ct.same_space(user.geometry):
        return user.array, False
    if only_grid_differs(ct, user.geometry, extent_tolerance_mm=extent_tolerance_mm):
        if allow_resample:
            log.info(
                "resampling labels (nearest neighbour) from %s onto the CT grid %s",
                user.geometry.describe(),
                ct.describe(),
            )
            return resample_nearest(user.array, user.geometry, ct), True
        raise SpaceMismatchError(
            "label map and CT cover the same region but on different voxel grids",
            case=case,
            path=path,
            expected=f"labels on the CT grid: {ct.describe()}",
            found=f"labels: {user.geometry.describe()}",
            fix="pass --resample (or set coarse.labels.resample: true) to resample the labels by nearest neighbour",
        )
    raise SpaceMismatchError(
        "label map and CT do not cover the same region (orientation or physical extent differ)",
        case=case,
        path=path,
        expected=f"labels on the CT grid: {ct.describe()}",
        found=f"labels: {user.geometry.describe()}",
        fix="pass the label map made for this CT (same patient, series and reconstruction)",
    )
