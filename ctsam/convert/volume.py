"""Turning a validated :class:`SliceStack` into an HU volume with its voxel grid.

Grid convention (the same as dcm2niix, so ctsam's NIfTI shares its affine with dcm2niix's and with
TotalSegmentator outputs made from dcm2niix conversions):

* index x runs along the DICOM row direction ``r`` (increasing column),
* index y runs against the DICOM column direction (``-c``): the rows are stored bottom-up,
* index z runs along the slice normal ``n = r x c``, slices sorted by increasing position.

**HU without loss** (:func:`plan_hu`, decided from the headers before any pixel is decoded):

* integer RescaleSlope and RescaleIntercept: int16 HU (exact). A slice whose HU leave the int16
  range turns the whole volume into int32 (exact, logged, recorded); nothing is clipped;
* one non-integer (slope, intercept) pair that float32 holds exactly (0.5, -1024.5 ...), with
  stored values that fit int16: the stored values as int16 with NIfTI ``scl_slope``/``scl_inter``
  (``volume.array * slope + intercept`` is HU, exactly);
* anything else (slope 0.001, per-slice non-integer pairs): float32 HU.

Slices are decoded by a pool of threads straight into one preallocated array (no per-slice
copies kept).

Gantry tilt (``tilt="resample"``): the slices are parallel planes, each shifted within its plane by
``shear * (d_k - d_0)``. The output is the regular orthogonal grid ``(r, c, n)`` whose slice ``k`` is
the DICOM slice ``k``'s own plane (so slice positions along the normal are those of the DICOM
files), and each slice is shifted back in-plane by bilinear interpolation. The grid grows in-plane
just enough to keep every pixel; voxels no slice covers get the series' lowest HU value (as
dcm2niix does). The step along the normal is the true slice distance ``|p_{k+1} - p_k| cos(tilt)``.

Uneven spacing (``uneven_spacing="resample"``): after any tilt correction, the slices are
interpolated linearly along the normal onto equally spaced positions ``d_0 + j * target`` (target:
the median or the smallest step) up to the last slice; integer volumes are rounded to the nearest
integer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ctsam.convert.geometry import SliceStack
from ctsam.io.dicom import DicomHeader, decode_file, read_pixels
from ctsam.progress import Progress
from ctsam.volume import CTVolume, Geometry

log = logging.getLogger(__name__)

_INT16_MIN, _INT16_MAX = -32768, 32767


@dataclass(frozen=True)
class HuPlan:
    """How HU are stored: ``dtype`` of the array; ``scl`` (slope, intercept) when the array holds
    stored values that NIfTI scaling turns into HU (None: the array holds HU)."""

    dtype: str
    scl: tuple[float, float] | None = None
    why: str = ""


@dataclass(frozen=True)
class VolumeReport:
    """Facts about the pixel conversion, for the sidecar.

    Attributes:
        clipped_voxels: voxels whose HU were clipped (always 0: values are never clipped).
        rescale: the distinct (RescaleSlope, RescaleIntercept) pairs of the slices.
        tilt_resampled: whether the slices were shifted to undo a gantry tilt.
        padded_voxels: voxels of the output grid outside every slice (tilt resampling only).
        fill_hu: the value given to those voxels (tilt resampling only).
        hu_dtype: dtype of the stored volume (int16, int32 or float32).
        scl_slope_inter: NIfTI scaling (slope, intercept) of the stored values, or None.
        hu_storage: why HU are stored that way.
        beyond_int16_voxels: voxels whose HU lie outside the int16 range (stored exactly as int32).
        uneven: for an uneven-spacing resample: original positions and target spacing; else None.
    """

    clipped_voxels: int
    rescale: list[tuple[float, float]]
    tilt_resampled: bool
    padded_voxels: int = 0
    fill_hu: float | None = None
    hu_dtype: str = "int16"
    scl_slope_inter: tuple[float, float] | None = None
    hu_storage: str = ""
    beyond_int16_voxels: int = 0
    uneven: dict | None = field(default=None)


def _float32_exact(value: float) -> bool:
    return float(np.float32(value)) == float(value)


def plan_hu(headers: list[DicomHeader]) -> HuPlan:
    """Choose the HU storage from the slices' rescale pairs and stored-value ranges (module docstring)."""
    pairs = sorted({(h.rescale_slope, h.rescale_intercept) for h in headers})
    if all(float(s).is_integer() and float(i).is_integer() for s, i in pairs):
        return HuPlan("int16", None, "integer RescaleSlope/RescaleIntercept: int16 HU")
    if len(pairs) == 1:
        slope, intercept = pairs[0]
        lo, hi = _stored_range(headers)
        if _float32_exact(slope) and _float32_exact(intercept) and lo >= _INT16_MIN and hi <= _INT16_MAX and slope != 0:
            return HuPlan(
                "int16",
                (slope, intercept),
                f"non-integer rescale {slope:g}/{intercept:g} held exactly by NIfTI scl_slope/scl_inter: "
                "stored values as int16",
            )
    return HuPlan("float32", None, f"non-integer rescale ({', '.join(f'{s:g}/{i:g}' for s, i in pairs)}): float32 HU")


def _stored_range(headers: list[DicomHeader]) -> tuple[int, int]:
    lo, hi = 0, 0
    for h in headers:
        bits = h.bits_stored or h.bits_allocated or 16
        if h.pixel_representation == 1:
            lo, hi = min(lo, -(1 << (bits - 1))), max(hi, (1 << (bits - 1)) - 1)
        else:
            hi = max(hi, (1 << bits) - 1)
    return lo, hi


def slice_to_hu(raw: np.ndarray, header: DicomHeader) -> tuple[np.ndarray, int]:
    """Apply RescaleSlope/Intercept to stored values; returns (int16 HU, number of clipped pixels).

    Kept for callers that want int16 whatever the input: integer slope and intercept are exact;
    any other slope is rounded to the nearest integer; values beyond int16 are clipped and counted.
    :func:`build_volume` itself never rounds or clips (see :func:`plan_hu`).
    """
    hu = _hu_exact(raw, header)
    if hu.dtype.kind == "f":
        hu = np.rint(hu)
    lo, hi = hu.min(), hu.max()
    clipped = 0
    if lo < _INT16_MIN or hi > _INT16_MAX:
        clipped = int(np.count_nonzero((hu < _INT16_MIN) | (hu > _INT16_MAX)))
        hu = np.clip(hu, _INT16_MIN, _INT16_MAX)
    return hu.astype(np.int16), clipped


def _hu_exact(raw: np.ndarray, header: DicomHeader) -> np.ndarray:
    """HU of one slice: int32 for integer rescale, float64 otherwise."""
    slope, intercept = header.rescale_slope, header.rescale_intercept
    if float(slope).is_integer() and float(intercept).is_integer():
        hu = raw.astype(np.int32)
        if slope != 1:
            hu *= int(slope)
        if intercept != 0:
            hu += int(intercept)
        return hu
    return raw.astype(np.float64) * slope + intercept


class _FrameCache:
    """Decoded compressed multi-frame files, each decoded once and dropped after its last frame."""

    def __init__(self, headers: list[DicomHeader]) -> None:
        self.lock = threading.Lock()
        self.arrays: dict[str, np.ndarray] = {}
        self.left: dict[str, int] = {}
        self.file_locks: dict[str, threading.Lock] = {}
        for h in headers:
            if h.frame_index is not None:
                key = str(h.path)
                self.left[key] = self.left.get(key, 0) + 1
                self.file_locks.setdefault(key, threading.Lock())

    def read(self, header: DicomHeader) -> np.ndarray:
        if header.frame_index is None:
            return read_pixels(header)
        fast = (
            read_pixels(header) if header.transfer_syntax_uid in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1") else None
        )
        if fast is not None:
            return fast
        key = str(header.path)
        with self.file_locks[key]:
            if key not in self.arrays:
                frames = decode_file(header)
                self.arrays[key] = frames if frames.ndim == 3 else frames[None]
            frame = self.arrays[key][header.frame_index]
        with self.lock:
            self.left[key] -= 1
            if self.left[key] == 0:
                self.arrays.pop(key, None)
        return frame


def decode_stack(headers: list[DicomHeader], plan: HuPlan, *, threads: int | None = None) -> tuple[np.ndarray, int]:
    """Decode every slice into one (n, rows, columns) array, rows bottom-up, stored as ``plan`` says.

    Returns:
        (array, number of voxels beyond int16; when non-zero the array is int32).
    """
    first = headers[0]
    rows, cols = int(first.rows), int(first.columns)  # type: ignore[arg-type]
    out = np.empty((len(headers), rows, cols), dtype=plan.dtype)
    cache = _FrameCache(headers)
    overflow: list[int] = []
    lock = threading.Lock()

    def fill(k: int) -> None:
        if not _fill_slice(out[k], cache.read(headers[k]), headers[k], plan):
            with lock:
                overflow.append(k)

    progress = Progress(len(headers), "decoding slices")
    _run_threaded(fill, len(headers), threads, lambda k: progress.update(item=headers[k].rel))
    beyond = 0
    if overflow:
        # rare: HU beyond int16 -> the whole volume as int32, nothing clipped
        wide = out.astype(np.int32)
        del out
        for k in sorted(overflow):
            hu = _hu_exact(read_pixels(headers[k]), headers[k])
            beyond += int(np.count_nonzero((hu < _INT16_MIN) | (hu > _INT16_MAX)))
            wide[k] = hu[::-1]
        log.warning(
            "%d voxels have HU outside the int16 range: the volume is stored as int32 (nothing clipped)", beyond
        )
        return wide, beyond
    return out, 0


def streamable(stack: SliceStack, plan: HuPlan) -> bool:
    """Whether slices can go straight to the file: no tilt or uneven resampling, and a dtype that no
    slice can change (float32, scaled int16, or int16 HU that provably stays within int16)."""
    if stack.tilted or stack.uneven:
        return False
    if not all(np.isfinite(h.rescale_slope) and np.isfinite(h.rescale_intercept) for h in stack.headers):
        return False  # non-finite HU: the in-memory path lets the guards count them
    return plan.scl is not None or plan.dtype == "float32" or all(_int16_add_safe(h) for h in stack.headers)


def stream_slices(
    stack: SliceStack, plan: HuPlan, *, threads: int | None = None, window: int | None = None
) -> Iterator[np.ndarray]:
    """Yield the output slices (rows bottom-up, dtype ``plan.dtype``) in z order, decoded ahead by threads.

    At most ``window`` slices (default: twice the threads) are decoded ahead, so memory stays at a few
    slices whatever the series length. Only for :func:`streamable` stacks.
    """
    headers = stack.headers
    one = np.empty((1, int(headers[0].rows), int(headers[0].columns)), dtype=plan.dtype)  # type: ignore[arg-type]
    cache = _FrameCache(headers)
    workers = threads or min(8, os.cpu_count() or 1)
    window = window or 2 * workers
    progress = Progress(len(headers), "decoding slices")

    def one_slice(k: int) -> np.ndarray:
        out = np.empty_like(one[0])
        _fill_slice(out, cache.read(headers[k]), headers[k], plan)
        return out

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ctsam-decode") as pool:
        pending = [pool.submit(one_slice, k) for k in range(min(window, len(headers)))]
        for k in range(len(headers)):
            result = pending.pop(0).result()
            nxt = k + len(pending) + 1
            if nxt < len(headers):
                pending.append(pool.submit(one_slice, nxt))
            progress.update(item=headers[k].rel)
            yield result


def _fill_slice(out: np.ndarray, raw: np.ndarray, header: DicomHeader, plan: HuPlan) -> bool:
    """Write one slice's HU (rows bottom-up) into ``out``; False if int16 HU would overflow (nothing written)."""
    target = out[::-1]
    if plan.scl is None and plan.dtype == "int16" and _int16_add_safe(header):
        # the common case: HU = stored + integer intercept, provably within int16 -> one int16 pass
        stored = raw.view(np.int16) if raw.dtype == np.uint16 else raw.astype(np.int16, copy=False)
        np.add(stored, np.int16(header.rescale_intercept), out=target)
        return True
    if plan.scl is not None:
        np.copyto(target, raw, casting="unsafe")  # values fit int16 (plan_hu checked BitsStored)
        return True
    hu = _hu_exact(raw, header)
    if plan.dtype == "float32":
        np.copyto(target, hu, casting="unsafe")
        return True
    if hu.min() < _INT16_MIN or hu.max() > _INT16_MAX:
        return False
    np.copyto(target, hu, casting="unsafe")
    return True


def _int16_add_safe(header: DicomHeader) -> bool:
    """Slope 1, integer intercept, and every possible stored value plus the intercept fits int16 (and
    unsigned stored values fit int16, so their bits can be read as int16)."""
    if header.rescale_slope != 1 or not float(header.rescale_intercept).is_integer():
        return False
    lo, hi = _stored_range([header])
    return (
        hi <= _INT16_MAX and lo + header.rescale_intercept >= _INT16_MIN and hi + header.rescale_intercept <= _INT16_MAX
    )


def _run_threaded(fn: Callable[[int], None], n: int, threads: int | None, done: Callable[[int], None]) -> None:
    workers = threads or min(8, os.cpu_count() or 1)
    if workers <= 1 or n < 4:
        for k in range(n):
            fn(k)
            done(k)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ctsam-decode") as pool:
        for k, future in enumerate([pool.submit(fn, k) for k in range(n)]):
            future.result()
            done(k)


def build_volume(
    stack: SliceStack,
    *,
    resample_tilt: bool,
    uneven_target_mm: float | None = None,
    threads: int | None = None,
) -> tuple[CTVolume, VolumeReport]:
    """Decode every slice, convert to HU and place it on the output grid.

    Args:
        stack: a validated stack. If ``stack.tilted``, ``resample_tilt`` must be True; if its
            spacing is uneven, ``uneven_target_mm`` must be given.
        resample_tilt: undo a gantry tilt by in-plane shifts (see module docstring).
        uneven_target_mm: resample linearly along the normal onto this spacing (uneven stacks).
        threads: decoder threads (default: up to 8, one per CPU).

    Returns:
        The CT volume (array z, y, x) and a :class:`VolumeReport`.
    """
    if stack.tilted and not resample_tilt:
        raise ValueError("a tilted stack needs resample_tilt=True (validate the tilt policy first)")
    if stack.uneven and uneven_target_mm is None:
        raise ValueError("an uneven stack needs uneven_target_mm (validate the spacing policy first)")
    spacing_row_mm, spacing_col_mm = stack.pixel_spacing_mm  # between rows (along c), between columns (along r)
    offsets = stack.offsets_rc_mm
    shift_px = np.stack([offsets[:, 0] / spacing_col_mm, offsets[:, 1] / spacing_row_mm], axis=1)  # (n, 2): x, y
    min_shift = shift_px.min(axis=0)
    extra = np.ceil(shift_px.max(axis=0) - min_shift - 1e-3).astype(int) if stack.tilted else np.zeros(2, int)
    n_x, n_y = stack.columns + int(extra[0]), stack.rows + int(extra[1])

    rescale = sorted({(h.rescale_slope, h.rescale_intercept) for h in stack.headers})
    plan = plan_hu(stack.headers)
    array, beyond = decode_stack(stack.headers, plan, threads=threads)
    padded, fill = 0, None
    if stack.tilted:
        array, padded, fill = _shift_slices(array, shift_px - min_shift, (n_y, n_x))
    step, n_z, uneven = stack.step_mm, stack.n_slices, None
    if stack.uneven:
        d = stack.distances_mm()
        array, _ = _resample_z(array, d, float(uneven_target_mm))  # type: ignore[arg-type]
        step, n_z = float(uneven_target_mm), array.shape[0]  # type: ignore[arg-type]
        uneven = {
            "resampled": True,
            "original_positions_along_normal_mm": [round(float(v - d[0]), 4) for v in d],
            "original_steps_mm": [round(float(v), 4) for v in np.diff(d)],
            "target_spacing_mm": round(step, 6),
            "n_output_slices": int(n_z),
            "interpolation": "linear along the slice normal",
        }
        log.warning(
            "uneven slice spacing (steps %.3f..%.3f mm): resampled linearly onto %d slices every %.3f mm",
            float(np.diff(d).min()),
            float(np.diff(d).max()),
            n_z,
            step,
        )
    if fill is not None and plan.scl is not None:
        fill = float(fill) * plan.scl[0] + plan.scl[1]  # stored value -> HU
    report = VolumeReport(
        clipped_voxels=0,
        rescale=rescale,
        tilt_resampled=bool(stack.tilted),
        padded_voxels=padded,
        fill_hu=fill,
        hu_dtype=str(array.dtype),
        scl_slope_inter=plan.scl,
        hu_storage=plan.why if not beyond else "HU beyond the int16 range: int32 HU",
        beyond_int16_voxels=beyond,
        uneven=uneven,
    )
    geometry = output_geometry(stack, (n_y, n_x), min_shift, n_z=n_z, step_mm=step)
    return CTVolume(array=array, geometry=geometry), report


def output_geometry(
    stack: SliceStack,
    shape_yx: tuple[int, int],
    min_shift_px: np.ndarray,
    *,
    n_z: int | None = None,
    step_mm: float | None = None,
) -> Geometry:
    """The output grid: x along r, y along -c (rows bottom-up), z along n; see the module docstring.

    Args:
        shape_yx: in-plane size of the output (rows, columns).
        min_shift_px: smallest in-plane offset of any slice from the first, in pixels (x, y); zero
            without tilt.
        n_z, step_mm: number of slices and their spacing (default: the stack's).
    """
    r, c, n = (np.asarray(v, dtype=float) for v in (stack.row_dir, stack.col_dir, stack.normal))
    spacing_row_mm, spacing_col_mm = stack.pixel_spacing_mm
    corner = stack.first_position_mm + min_shift_px[0] * spacing_col_mm * r + min_shift_px[1] * spacing_row_mm * c
    origin = corner + (shape_yx[0] - 1) * spacing_row_mm * c
    return Geometry(
        shape_zyx=(n_z or stack.n_slices, shape_yx[0], shape_yx[1]),
        spacing_xyz_mm=(spacing_col_mm, spacing_row_mm, step_mm or stack.step_mm),
        origin_xyz_mm=tuple(origin),
        direction=np.column_stack([r, -c, n]),
    )


def _shift_slices(array: np.ndarray, shift_px: np.ndarray, shape_yx: tuple[int, int]) -> tuple[np.ndarray, int, float]:
    """Place slice k (rows bottom-up in ``array``) at in-plane offset ``shift_px[k]`` (x, y pixels, >= 0).

    Output pixel (j, i) of slice k samples the DICOM slice at (j - shift_y, i - shift_x) bilinearly
    (j counted in DICOM row order); pixels outside the slice get the lowest value of the series.
    Returns (array (z, y, x) of the input's dtype, rows bottom-up; number of padded voxels; fill value).
    """
    from scipy import ndimage

    fill = array.min()
    out = np.empty((array.shape[0], *shape_yx), dtype=array.dtype)
    padded = 0
    integer = array.dtype.kind in "iu"
    for k in range(array.shape[0]):
        hu = array[k][::-1]  # DICOM row order
        sx, sy = float(shift_px[k, 0]), float(shift_px[k, 1])
        moved = ndimage.affine_transform(
            hu.astype(np.float64), np.eye(2), offset=(-sy, -sx), output_shape=shape_yx, order=1, mode="nearest"
        )
        # output pixels whose sample position lies outside the slice (1e-3 px slack for rounding) get the fill
        src_y = np.arange(shape_yx[0]) - sy
        src_x = np.arange(shape_yx[1]) - sx
        inside_y = (src_y > -1e-3) & (src_y < hu.shape[0] - 1 + 1e-3)
        inside_x = (src_x > -1e-3) & (src_x < hu.shape[1] - 1 + 1e-3)
        moved[~inside_y, :] = fill
        moved[:, ~inside_x] = fill
        padded += shape_yx[0] * shape_yx[1] - int(inside_y.sum()) * int(inside_x.sum())
        out[k] = (np.rint(moved) if integer else moved)[::-1, :]
    return out, padded, (int(fill) if integer else float(fill))


def _resample_z(array: np.ndarray, d: np.ndarray, target_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation along axis 0 from positions ``d`` (increasing) onto ``d[0] + j * target_mm``."""
    n_out = int(np.floor((d[-1] - d[0]) / target_mm + 1e-6)) + 1
    grid = d[0] + np.arange(n_out) * target_mm
    out = np.empty((n_out, *array.shape[1:]), dtype=array.dtype)
    integer = array.dtype.kind in "iu"
    upper = np.clip(np.searchsorted(d, grid, side="right"), 1, len(d) - 1)
    for j, z in enumerate(grid):
        k = int(upper[j]) - 1
        w = (z - d[k]) / (d[k + 1] - d[k])
        if abs(w) < 1e-9:
            out[j] = array[k]
            continue
        if abs(w - 1) < 1e-9:
            out[j] = array[k + 1]
            continue
        value = array[k].astype(np.float64) * (1 - w) + array[k + 1].astype(np.float64) * w
        out[j] = np.rint(value) if integer else value
    return out, grid
