"""Reading and writing CT volumes and label maps (NIfTI via nibabel, other formats via SimpleITK).

NIfTI files are written atomically. Label maps carry their label table twice: in the NIfTI header
extension (TotalSegmentator/Slicer XML) and in a ``.tsv`` sidecar beside the image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ctsam.errors import InputDataError
from ctsam.io.atomic import atomic_path
from ctsam.io.labeltable import labels_from_xml, labels_to_xml, read_label_tsv, sidecar_tsv_path, write_label_tsv
from ctsam.volume import CTVolume, Geometry, LabelMap, smallest_label_dtype

log = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(_NIFTI_SUFFIXES)


def _missing(path: Path, what: str, case: str | None) -> InputDataError:
    return InputDataError(
        f"{what} not found",
        case=case,
        path=path,
        expected=f"an existing {what} file",
        found="no such file",
        fix="check the path (and the sample sheet) and that the previous stage finished",
    )


def read_image(path: str | os.PathLike[str], *, case: str | None = None) -> tuple[np.ndarray, Geometry, object]:
    """Read any image file. Returns ``(array_zyx, geometry, nifti_header_or_None)``."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, "image", case)
    try:
        if _is_nifti(path):
            import nibabel as nib

            img = nib.load(str(path))
            if len(img.shape) != 3:
                raise InputDataError(
                    "image is not a 3-D volume",
                    case=case,
                    path=path,
                    expected="a 3-D image",
                    found=f"shape {img.shape}",
                    fix="pass a single 3-D volume (split 4-D series first)",
                )
            array_xyz = np.asanyarray(img.dataobj)
            array = np.ascontiguousarray(array_xyz.transpose(2, 1, 0))
            geometry = Geometry.from_affine_ras(img.affine, array.shape)
            return array, geometry, img.header
        import SimpleITK as sitk

        img = sitk.ReadImage(str(path))
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise InputDataError(
                "image is not a scalar 3-D volume",
                case=case,
                path=path,
                expected="a scalar 3-D image",
                found=f"dimension {img.GetDimension()}, {img.GetNumberOfComponentsPerPixel()} components",
                fix="pass a single scalar 3-D volume",
            )
        array = sitk.GetArrayFromImage(img)
        geometry = Geometry(
            shape_zyx=array.shape,
            spacing_xyz_mm=img.GetSpacing(),
            origin_xyz_mm=img.GetOrigin(),
            direction=np.asarray(img.GetDirection()).reshape(3, 3),
        )
        return array, geometry, None
    except InputDataError:
        raise
    except Exception as err:  # corrupt or unsupported file
        raise InputDataError(
            "image could not be read",
            case=case,
            path=path,
            expected="a readable NIfTI/NRRD/MHA image",
            found=f"{type(err).__name__}: {err}",
            fix="check that the file is complete (re-copy it) and in a supported format",
        ) from err


def read_geometry(path: str | os.PathLike[str], *, case: str | None = None) -> Geometry:
    """Only the voxel grid of an image; NIfTI is read header-only (no voxels decompressed)."""
    path = Path(path)
    if _is_nifti(path) and path.exists():
        import nibabel as nib

        try:
            img = nib.load(str(path))
        except Exception:  # noqa: BLE001 - read_image below produces the precise error
            img = None
        if img is not None and len(img.shape) == 3:
            return Geometry.from_affine_ras(img.affine, tuple(reversed(img.shape)))
    _, geometry, _ = read_image(path, case=case)
    return geometry


def read_ct(path: str | os.PathLike[str], *, case: str | None = None) -> CTVolume:
    """Read a CT image; the array keeps its stored dtype (usually int16 HU)."""
    array, geometry, _ = read_image(path, case=case)
    if not np.issubdtype(array.dtype, np.number):
        raise InputDataError("CT image has a non-numeric dtype", case=case, path=path, found=str(array.dtype))
    return CTVolume(array=array, geometry=geometry)


def read_labelmap(
    path: str | os.PathLike[str],
    *,
    case: str | None = None,
    labels: dict[int, str] | None = None,
) -> LabelMap:
    """Read a label map and its label table.

    The table comes from, in order: ``labels`` if given, the ``.tsv`` sidecar, the NIfTI header
    extension. Without any, labels are named ``label_<index>``.
    """
    path = Path(path)
    array, geometry, header = read_image(path, case=case)
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InputDataError(
                "label map holds non-integer values",
                case=case,
                path=path,
                expected="integer labels",
                found=f"dtype {array.dtype} with fractional values",
                fix="pass a label map (not a probability map)",
            )
        array = rounded
    if array.min(initial=0) < 0:
        raise InputDataError("label map holds negative values", case=case, path=path, found=f"min {array.min()}")
    array = array.astype(smallest_label_dtype(int(array.max(initial=0))), copy=False)
    table = labels
    if table is None:
        tsv = sidecar_tsv_path(path)
        if tsv.exists():
            table = read_label_tsv(tsv)
    if table is None and header is not None:
        table = labels_from_nifti_header(header)
    if table is None:
        table = {}
    present = {int(v) for v in np.unique(array) if v != 0}
    table = dict(table)
    for index in sorted(present - set(table)):
        table[index] = f"label_{index}"
    return LabelMap(array=np.ascontiguousarray(array), geometry=geometry, labels=table)


def labels_from_nifti_header(header: object) -> dict[int, str] | None:
    """The label table stored in a NIfTI header extension, or None."""
    for ext in getattr(header, "extensions", []):
        try:
            content = ext.get_content()
        except Exception:  # noqa: BLE001 - a foreign extension we cannot read is not ours
            continue
        if isinstance(content, (bytes, str)) and b"LabelTable" in (
            content if isinstance(content, bytes) else content.encode()
        ):
            try:
                return labels_from_xml(content)
            except Exception:  # noqa: BLE001
                log.warning("ignoring an unreadable label-table header extension")
    return None


def _nifti_image(array_zyx: np.ndarray, geometry: Geometry):
    import nibabel as nib

    if tuple(array_zyx.shape) != geometry.shape_zyx:
        raise ValueError(f"array shape {array_zyx.shape} != geometry {geometry.shape_zyx}")
    img = nib.Nifti1Image(np.asarray(array_zyx).transpose(2, 1, 0), geometry.affine_ras())
    img.set_qform(geometry.affine_ras(), code=1)
    img.set_sform(geometry.affine_ras(), code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def write_ct(path: str | os.PathLike[str], volume: CTVolume, *, compresslevel: int = 1) -> None:
    """Write a CT as NIfTI atomically (int16 stays int16; no scaling)."""
    img = _nifti_image(volume.array, volume.geometry)
    _save_nifti(img, Path(path), compresslevel)


def write_labelmap(path: str | os.PathLike[str], labelmap: LabelMap, *, compresslevel: int = 1) -> None:
    """Write a label map (uint8/uint16) with its label table in the header and a ``.tsv`` sidecar."""
    import nibabel as nib

    path = Path(path)
    max_label = max([int(labelmap.array.max(initial=0))] + list(labelmap.labels))
    array = labelmap.array.astype(smallest_label_dtype(max_label), copy=False)
    img = _nifti_image(array, labelmap.geometry)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, labels_to_xml(labelmap.labels).encode("utf-8")))
    _save_nifti(img, path, compresslevel)
    write_label_tsv(sidecar_tsv_path(path), labelmap.labels)


def _save_nifti(img, path: Path, compresslevel: int) -> None:
    """Write header, extensions and voxels straight into the (gzip) stream: no full-size copies."""
    import gzip

    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        if path.name.endswith(".gz"):
            # fixed mtime and no file name in the gzip header: identical data -> identical bytes
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0) as fh:
                _write_nifti_stream(img, fh)
        else:
            _write_nifti_stream(img, raw)


def _write_nifti_stream(img, fh) -> None:
    """Single-file NIfTI-1: header (+ extensions), padding to vox_offset, then voxels in Fortran order."""
    header = img.header
    array_xyz = np.asanyarray(img.dataobj)
    header.set_data_dtype(array_xyz.dtype)
    header.set_data_shape(array_xyz.shape)
    header.set_slope_inter(None, None)
    header["vox_offset"] = 0  # let nibabel compute the minimum offset (352 + extensions)
    header.write_to(fh)
    offset = int(header.get_data_offset())
    written = 348 + 4 + sum(ext.get_sizeondisk() for ext in header.extensions)
    if offset < written:
        raise RuntimeError(f"NIfTI vox_offset {offset} < header size {written}")
    fh.write(b"\0" * (offset - written))
    # array_xyz is a transposed view of a C-ordered (z, y, x) array, so its Fortran order is the
    # C order of the original: stream it slab by slab without materialising a copy
    zyx = array_xyz.T
    dtype = header.get_data_dtype()
    for k in range(zyx.shape[0]):
        fh.write(np.ascontiguousarray(zyx[k], dtype=dtype).tobytes())
