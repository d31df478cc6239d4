"""One structure's feature extraction, as run inside a worker process (or in-process for 1 worker).

A :class:`StructureTask` carries only crops (a few MB), never whole volumes. The worker rebuilds
SimpleITK images with the crop's exact world geometry, resamples the CT onto the planned grid when
the parameter file asks for resampling (the mask arrives already on that grid), and calls
pyradiomics' ``RadiomicsFeatureExtractor.execute``. Every failure becomes a ``failed`` result with
its reason; nothing raised here stops the case.

This module imports only the standard library at import time, so a worker can cap its thread pools
(:func:`init_worker`) before numpy, BLAS or ITK load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

#: Environment variables that cap native thread pools (OpenMP, BLAS flavours, numexpr, ITK).
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_EMPTY = "empty"
STATUS_TOO_SMALL = "too_small"


@dataclass(frozen=True)
class CropGeometry:
    """World placement of a crop, in SimpleITK's terms (x, y, z order; LPS mm).

    ``direction`` holds 9 values row-major, exactly as ``Image.GetDirection()`` returns them.
    ``origin_xyz_mm`` comes from ITK's ``TransformIndexToPhysicalPoint`` on the whole image, so it is
    bit-identical to what ITK's own crop filters would produce.
    """

    spacing_xyz_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: tuple[float, ...]


@dataclass(frozen=True)
class StructureTask:
    """Everything a worker needs to extract one structure.

    Attributes:
        label: label value in the case's label map; name: structure name.
        n_voxels: voxel count in the original label map.
        params: parsed pyradiomics parameter file; params_sha256: its digest (extractor cache key).
        overrides: settings that replace the file's for this extraction (label, normalise, resampling).
        image_zyx / image_geometry: the CT crop (z, y, x), dtype as read.
        mask_zyx / mask_geometry: binary uint8 mask (z, y, x): a crop of the label map, or -- when
            ``grid`` is set -- the label map already resampled (nearest neighbour) onto ``grid``.
        grid: the resampling grid (``grid.ResampleGrid``) or None: no resampling by ctsam.
        interpolator: SimpleITK interpolator name for the CT when ``grid`` is set.
        planning_error: set when the parent could not prepare the crop; the task then fails at once.
    """

    label: int
    name: str
    n_voxels: int
    params: dict = field(repr=False)
    params_sha256: str = ""
    overrides: dict = field(default_factory=dict)
    image_zyx: Any = field(default=None, repr=False)
    image_geometry: CropGeometry | None = None
    mask_zyx: Any = field(default=None, repr=False)
    mask_geometry: CropGeometry | None = None
    grid: Any = None
    interpolator: str | int = "sitkBSpline"
    planning_error: str = ""


@dataclass(frozen=True)
class StructureResult:
    """Outcome for one structure: ``status`` is ok/failed/empty/too_small; ``features`` (name, value) in pyradiomics order.

    ``too_small``: the mask (after resampling, if any) spans fewer axes or holds fewer voxels than the
    parameter file's ``minimumROIDimensions`` / ``minimumROISize`` (a thin tube at 2 mm, a single slice
    or voxel); the reason says which, so the row is a finding rather than a crash.
    """

    label: int
    name: str
    n_voxels: int
    status: str
    reason: str = ""
    features: tuple[tuple[str, float], ...] = ()
    seconds: float = 0.0


def init_worker() -> None:
    """Process-pool initializer: one thread for OpenMP/BLAS/ITK, quiet pyradiomics logging."""
    for var in THREAD_ENV_VARS:
        os.environ[var] = "1"
    limit_native_threads(1)


def limit_native_threads(n: int) -> int:
    """Cap SimpleITK's (global default) and BLAS/OpenMP thread pools at ``n``; return ITK's previous value."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(n))
    except ImportError:  # optional: env vars already cover freshly started workers
        pass
    return previous


_EXTRACTORS: dict[str, Any] = {}


def _extractor(task: StructureTask):
    import json

    from ctsam.radiomics.params import build_extractor

    key = task.params_sha256 + json.dumps(task.overrides, sort_keys=True, default=str)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = build_extractor(task.params, overrides=task.overrides)
    return _EXTRACTORS[key]


def to_sitk(array_zyx, geometry: CropGeometry):
    """A SimpleITK image of ``array_zyx`` (z, y, x) placed at ``geometry``."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(geometry.spacing_xyz_mm)
    img.SetOrigin(geometry.origin_xyz_mm)
    img.SetDirection(geometry.direction)
    return img


def sitk_interpolator(name_or_value: str | int):
    """pyradiomics' interpolator lookup: a ``sitk*`` name or enum value; unknown names fall back to B-spline."""
    import SimpleITK as sitk

    if isinstance(name_or_value, str):
        return getattr(sitk, name_or_value, sitk.sitkBSpline)
    return name_or_value


def resample_onto_grid(image, grid, interpolator):
    """Resample ``image`` onto ``grid`` keeping its pixel type, as pyradiomics' ``resampleImage`` does."""
    import SimpleITK as sitk

    rif = sitk.ResampleImageFilter()
    rif.SetOutputSpacing(grid.spacing_xyz_mm)
    rif.SetOutputDirection(grid.direction)
    rif.SetSize(grid.size_xyz)
    rif.SetOutputOrigin(grid.origin_xyz_mm)
    rif.SetOutputPixelType(image.GetPixelID())
    rif.SetInterpolator(sitk_interpolator(interpolator))
    return rif.Execute(image)


def mask_too_small(mask_zyx, params: dict, *, resampled: bool, spacing_xyz_mm: tuple[float, ...]) -> str:
    """Why pyradiomics would refuse ``mask_zyx`` (its ``checkMask`` limits), or ``""`` when it is large enough.

    pyradiomics raises on a mask whose bounding box spans fewer than ``minimumROIDimensions`` axes
    (default 2) or that holds fewer than ``minimumROISize`` voxels; ctsam checks first and says so.
    """
    import numpy as np

    settings = (params or {}).get("setting") or {}
    min_dims = int(settings.get("minimumROIDimensions") or 2)
    min_size = settings.get("minimumROISize")
    mask = np.asarray(mask_zyx) > 0
    n = int(np.count_nonzero(mask))
    if n == 0:
        return "no voxels left" + (" after resampling" if resampled else "")
    coords = np.nonzero(mask)
    extent = [int(c.max() - c.min() + 1) for c in coords]  # z, y, x
    dims = sum(e > 1 for e in extent)
    grid = "x".join(f"{v:g}" for v in spacing_xyz_mm) + " mm"
    where = f"on the {'resampled ' if resampled else ''}{grid} grid"
    if dims < min_dims:
        return (
            f"mask spans {dims} axis/axes {where} (extent z,y,x = {extent[0]},{extent[1]},{extent[2]} voxels, "
            f"{n} voxels); minimumROIDimensions is {min_dims}: a single slice, line or voxel has no 3-D texture "
            "(use a finer resampledPixelSpacing for thin structures)"
        )
    if min_size is not None and n < int(min_size):
        return f"mask holds {n} voxels {where}; minimumROISize is {int(min_size)}"
    return ""


def extract_structure(task: StructureTask) -> StructureResult:
    """Extract one structure's features; any exception becomes a ``failed`` result with its reason."""
    t0 = time.perf_counter()
    if task.planning_error:
        return StructureResult(task.label, task.name, task.n_voxels, STATUS_FAILED, task.planning_error)
    try:
        import numpy as np

        image = to_sitk(task.image_zyx, task.image_geometry)
        mask = to_sitk(task.mask_zyx, task.mask_geometry)
        if task.grid is not None:
            image = resample_onto_grid(image, task.grid, task.interpolator)
        too_small = mask_too_small(
            task.mask_zyx, task.params, resampled=task.grid is not None, spacing_xyz_mm=tuple(mask.GetSpacing())
        )
        if too_small:
            return StructureResult(
                task.label, task.name, task.n_voxels, STATUS_TOO_SMALL, too_small, (), time.perf_counter() - t0
            )
        raw = _extractor(task).execute(image, mask, label=1)
        features = tuple(
            (str(k), float(np.asarray(v, dtype=float))) for k, v in raw.items() if not str(k).startswith("diagnostics_")
        )
        if not features:
            raise ValueError("pyradiomics returned no features (no feature class enabled?)")
        return StructureResult(task.label, task.name, task.n_voxels, STATUS_OK, "", features, time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001 - one structure's failure is data, not a crash
        reason = f"{type(err).__name__}: {err}".strip().replace("\n", " ")[:500]
        return StructureResult(
            task.label, task.name, task.n_voxels, STATUS_FAILED, reason, (), time.perf_counter() - t0
        )
