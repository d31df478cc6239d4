"""Turning a validated :class:`SliceStack` into an int16 HU volume with its voxel grid.

Grid convention (the same as dcm2niix, so ctsam's NIfTI shares its affine with dcm2niix's and with
TotalSegmentator outputs made from dcm2niix conversions):

* index x runs along the DICOM row direction ``r`` (increasing column),
* index y runs against the DICOM column direction (``-c``): the rows are stored bottom-up,
* index z runs along the slice normal ``n = r x c``, slices sorted by increasing position.

Gantry tilt (``tilt="resample"``): the slices are parallel planes, each shifted within its plane by
``shear * (d_k - d_0)``. The output is the regular orthogonal grid ``(r, c, n)`` whose slice ``k`` is
the DICOM slice ``k``'s own plane (so slice positions along the normal are those of the DICOM
files), and each slice is shifted back in-plane by bilinear interpolation. The grid grows in-plane
just enough to keep every pixel; voxels no slice covers get the series' lowest HU value (as
dcm2niix does). The step along the normal is the true slice distance ``|p_{k+1} - p_k| cos(tilt)``.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass

import numpy as np

from ctsam.convert.geometry import SliceStack
from ctsam.io.dicom import DicomHeader, read_pixels
from ctsam.progress import Progress
from ctsam.volume import CTVolume, Geometry

log = logging.getLogger(__name__)

_INT16_MIN, _INT16_MAX = -32768, 32767


@dataclass(frozen=True)
class VolumeReport:
    """Facts about the pixel conversion, for the sidecar.

    Attributes:
        clipped_voxels: voxels whose HU fell outside int16 and were clipped.
        rescale: the distinct (RescaleSlope, RescaleIntercept) pairs of the slices.
        tilt_resampled: whether the slices were shifted to undo a gantry tilt.
        padded_voxels: voxels of the output grid outside every slice (tilt resampling only).
        fill_hu: the value given to those voxels (tilt resampling only).
    """

    clipped_voxels: int
    rescale: list[tuple[float, float]]
    tilt_resampled: bool
    padded_voxels: int = 0
    fill_hu: int | None = None


def slice_to_hu(raw: np.ndarray, header: DicomHeader) -> tuple[np.ndarray, int]:
    """Apply RescaleSlope/Intercept to stored values; returns (int16 HU, number of clipped pixels).

    Integer slope and intercept are applied in int32 arithmetic (exact); any other slope is applied
    in float64 and rounded to the nearest integer.
    """
    slope, intercept = header.rescale_slope, header.rescale_intercept
    if float(slope).is_integer() and float(intercept).is_integer():
        hu = raw.astype(np.int32)
        if slope != 1:
            hu *= int(slope)
        if intercept != 0:
            hu += int(intercept)
    else:
        hu = np.rint(raw.astype(np.float64) * slope + intercept)
    lo, hi = hu.min(), hu.max()
    clipped = 0
    if lo < _INT16_MIN or hi > _INT16_MAX:
        clipped = int(np.count_nonzero((hu < _INT16_MIN) | (hu > _INT16_MAX)))
        hu = np.clip(hu, _INT16_MIN, _INT16_MAX)
    return hu.astype(np.int16), clipped


def build_volume(stack: SliceStack, *, resample_tilt: bool) -> tuple[CTVolume, VolumeReport]:
    """Decode every slice, convert to HU (int16) and place it on the output grid.

    Args:
        stack: a validated stack. If ``stack.tilted``, ``resample_tilt`` must be True.
        resample_tilt: undo a gantry tilt by in-plane shifts (see module docstring).

    Returns:
        The CT volume (array z, y, x; int16 HU) and a :class:`VolumeReport`.
    """
    if stack.tilted and not resample_tilt:
        raise ValueError("a tilted stack needs resample_tilt=True (validate the tilt policy first)")
    spacing_row_mm, spacing_col_mm = stack.pixel_spacing_mm  # between rows (along c), between columns (along r)
    offsets = stack.offsets_rc_mm
    shift_px = np.stack([offsets[:, 0] / spacing_col_mm, offsets[:, 1] / spacing_row_mm], axis=1)  # (n, 2): x, y
    min_shift = shift_px.min(axis=0)
    extra = np.ceil(shift_px.max(axis=0) - min_shift - 1e-3).astype(int) if stack.tilted else np.zeros(2, int)
    n_x, n_y = stack.columns + int(extra[0]), stack.rows + int(extra[1])

    rescale = sorted({(h.rescale_slope, h.rescale_intercept) for h in stack.headers})
    clipped = 0
    progress = Progress(stack.n_slices, "decoding slices")
    if not stack.tilted:
        array = np.empty((stack.n_slices, n_y, n_x), dtype=np.int16)
        for k, header in enumerate(stack.headers):
            hu, c = slice_to_hu(read_pixels(header), header)
            clipped += c
            array[k] = hu[::-1, :]  # rows bottom-up (module docstring)
            progress.update(item=header.rel)
        report = VolumeReport(clipped_voxels=clipped, rescale=rescale, tilt_resampled=False)
    else:
        slices = []
        for header in stack.headers:
            hu, c = slice_to_hu(read_pixels(header), header)
            clipped += c
            slices.append(hu)
            progress.update(item=header.rel)
        array, padded, fill = _shift_slices(slices, shift_px - min_shift, (n_y, n_x))
        report = VolumeReport(
            clipped_voxels=clipped, rescale=rescale, tilt_resampled=True, padded_voxels=padded, fill_hu=fill
        )
    if clipped:
        log.warning("%d voxels fell outside the int16 range and were clipped", clipped)
    return CTVolume(array=array, geometry=output_geometry(stack, (n_y, n_x), min_shift)), report


def output_geometry(stack: SliceStack, shape_yx: tuple[int, int], min_shift_px: np.ndarray) -> Geometry:
    """The output grid: x along r, y along -c (rows bottom-up), z along n; see the module docstring.

    Args:
        shape_yx: in-plane size of the output (rows, columns).
        min_shift_px: smallest in-plane offset of any slice from the first, in pixels (x, y); zero
            without tilt.
    """
    r, c, n = (np.asarray(v, dtype=float) for v in (stack.row_dir, stack.col_dir, stack.normal))
    spacing_row_mm, spacing_col_mm = stack.pixel_spacing_mm
    corner = stack.first_position_mm + min_shift_px[0] * spacing_col_mm * r + min_shift_px[1] * spacing_row_mm * c
    origin = corner + (shape_yx[0] - 1) * spacing_row_mm * c
    return Geometry(
        shape_zyx=(stack.n_slices, shape_yx[0], shape_yx[1]),
        spacing_xyz_mm=(spacing_col_mm, spacing_row_mm, stack.step_mm),
        origin_xyz_mm=tuple(origin),
        direction=np.column_stack([r, -c, n]),
    )


def _shift_slices(
    slices: list[np.ndarray], shift_px: np.ndarray, shape_yx: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """Place slice k at in-plane offset ``shift_px[k]`` (x, y pixels, >= 0) on a (ny, nx) grid.

    Output pixel (j, i) of slice k samples the DICOM slice at (j - shift_y, i - shift_x) bilinearly;
    pixels outside the slice get the lowest HU of the series. Rows are then stored bottom-up.
    Returns (int16 array (z, y, x), number of padded voxels, fill value).
    """
    from scipy import ndimage

    fill = int(min(int(s.min()) for s in slices))
    out = np.empty((len(slices), *shape_yx), dtype=np.int16)
    padded = 0
    for k, hu in enumerate(slices):
        sx, sy = float(shift_px[k, 0]), float(shift_px[k, 1])
        moved = ndimage.affine_transform(
            hu.astype(np.float32), np.eye(2), offset=(-sy, -sx), output_shape=shape_yx, order=1, mode="nearest"
        )
        # output pixels whose sample position lies outside the slice (1e-3 px slack for rounding) get the fill
        src_y = np.arange(shape_yx[0]) - sy
        src_x = np.arange(shape_yx[1]) - sx
        inside_y = (src_y > -1e-3) & (src_y < hu.shape[0] - 1 + 1e-3)
        inside_x = (src_x > -1e-3) & (src_x < hu.shape[1] - 1 + 1e-3)
        moved[~inside_y, :] = fill
        moved[:, ~inside_x] = fill
        padded += shape_yx[0] * shape_yx[1] - int(inside_y.sum()) * int(inside_x.sum())
        out[k] = np.rint(moved)[::-1, :].astype(np.int16)
    return out, padded, fill
