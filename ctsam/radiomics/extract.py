"""Per-case orchestration: read, plan one crop per structure, extract in parallel, collect.

Equivalence with whole-volume pyradiomics (``extractor.execute(ct, labels, label=k)``), by branch of
pyradiomics' own pre-processing:

* **resampling** (``resampledPixelSpacing`` + ``interpolator``, target spacing differs from the CT's):
  ctsam computes pyradiomics' whole-volume grid (``grid.resample_grid``), resamples the label map onto
  it here with nearest neighbour (exact: same input image, same grid), sends the worker a CT crop
  that covers the grid plus ``grid.INTERPOLATION_MARGIN_VOXELS`` and lets it B-spline the crop onto
  the grid. Only the B-spline prefilter's border effect differs (~1e-12 relative).
* **resampling to the CT's own spacing**: pyradiomics only crops the padded bounding box; the crop
  sent has at least ``padDistance`` voxels of margin, so the same box results.
* **no resampling**: pyradiomics crops to the bounding box; identical for the ``Original`` image type.
  Filtered image types (LoG, wavelet, ...) see ``margin_mm`` of context instead of the whole volume.
* **normalize**: uses whole-image statistics, so it is applied here, once, before cropping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctsam.errors import ConfigError, InputDataError
from ctsam.radiomics.grid import (
    INTERPOLATION_MARGIN_VOXELS,
    StructureExtent,
    effective_resampled_spacing,
    input_box_for_grid,
    margin_voxels_zyx,
    resample_grid,
    structure_extents,
)
from ctsam.radiomics.params import RadiomicsParams
from ctsam.radiomics.worker import (
    STATUS_EMPTY,
    STATUS_FAILED,
    CropGeometry,
    StructureResult,
    StructureTask,
    extract_structure,
)

log = logging.getLogger(__name__)

DEFAULT_MARGIN_MM = 10.0


@dataclass(frozen=True)
class CaseFeatures:
    """Radiomics of one case: one :class:`StructureResult` per structure, sorted by label value.

    ``geometry`` describes the CT grid (shape z,y,x; spacing, origin x,y,z mm); ``timings_s`` holds
    phase durations (logged, never written to outputs, so outputs stay byte-identical across runs).
    """

    case: str
    results: tuple[StructureResult, ...]
    params: RadiomicsParams
    margin_mm: float
    workers: int
    geometry: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    # lesion structures (from ``ctsam lesions``), by name: {"lesion_id": .., "containing_structure": ..}
    lesions: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


@dataclass(frozen=True)
class CaseImages:
    """CT and label map as SimpleITK images (read as pyradiomics would), with the label table."""

    ct: object
    labels: object
    names: dict[int, str]


def read_case(ct_path: str | Path, labels_path: str | Path, *, case: str | None = None) -> CaseImages:
    """Read the CT and label map with SimpleITK; check they share a grid (1e-3 mm) and that labels are integers."""
    import SimpleITK as sitk

    from ctsam.volume import check_same_space

    images = []
    for path, what in ((Path(ct_path), "CT"), (Path(labels_path), "label map")):
        if not path.is_file():
            raise InputDataError(
                f"{what} not found",
                case=case,
                path=path,
                expected=f"an existing {what} file",
                found="no such file",
                fix="check the path and that the previous stage finished",
            )
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise InputDataError(
                f"{what} could not be read",
                case=case,
                path=path,
                found=str(err).strip()[:300],
                fix="check that the file is complete and a NIfTI/NRRD/MHA image",
            ) from err
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise InputDataError(
                f"{what} is not a scalar 3-D image",
                case=case,
                path=path,
                found=f"{img.GetDimension()}-D, {img.GetNumberOfComponentsPerPixel()} components",
            )
        images.append(img)
    ct, labels = images
    if labels.GetPixelID() not in _INTEGER_PIXEL_IDS():
        arr = sitk.GetArrayViewFromImage(labels)
        if not np.array_equal(arr, np.rint(arr)):
            raise InputDataError(
                "label map holds non-integer values",
                case=case,
                path=labels_path,
                expected="integer labels",
                found=labels.GetPixelIDTypeAsString(),
                fix="pass a label map, not a probability map",
            )
        labels = sitk.Cast(labels, sitk.sitkUInt16)
    check_same_space(_geometry(ct), _geometry(labels), name_a="CT", name_b="label map", case=case)
    return CaseImages(ct=ct, labels=labels, names=label_names(labels_path))


def _INTEGER_PIXEL_IDS() -> set[int]:
    import SimpleITK as sitk

    return {
        sitk.sitkUInt8,
        sitk.sitkInt8,
        sitk.sitkUInt16,
        sitk.sitkInt16,
        sitk.sitkUInt32,
        sitk.sitkInt32,
        sitk.sitkUInt64,
        sitk.sitkInt64,
    }


def _geometry(img):
    from ctsam.volume import Geometry

    return Geometry(
        shape_zyx=tuple(reversed(img.GetSize())),
        spacing_xyz_mm=img.GetSpacing(),
        origin_xyz_mm=img.GetOrigin(),
        direction=np.asarray(img.GetDirection()).reshape(3, 3),
    )


def label_names(labels_path: str | Path) -> dict[int, str]:
    """The label table of a label map: ``.tsv`` sidecar, else NIfTI header XML, else ``{}``."""
    from ctsam.io.image import labels_from_nifti_header
    from ctsam.io.labeltable import read_label_tsv, sidecar_tsv_path

    labels_path = Path(labels_path)
    tsv = sidecar_tsv_path(labels_path)
    if tsv.exists():
        return read_label_tsv(tsv)
    if labels_path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return labels_from_nifti_header(nib.load(str(labels_path)).header) or {}
    return {}


def select_structures(
    names: dict[int, str], extents: dict[int, StructureExtent], wanted: Sequence[str] | None, *, case: str | None
) -> list[tuple[int, str]]:
    """(label, name) pairs to report: ``wanted`` names, or every label in the table or in the map."""
    table = dict(names)
    for label in extents:
        table.setdefault(label, f"label_{label}")
    if not wanted:
        return sorted(table.items())
    by_name = {name: label for label, name in table.items()}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise ConfigError(
            f"unknown structure name(s): {', '.join(unknown)}",
            case=case,
            expected=f"names from the label table ({len(by_name)} known, e.g. {', '.join(sorted(by_name)[:5])})",
            found=", ".join(unknown),
            fix="check the spelling in --structures / radiomics.structures",
        )
    return sorted((by_name[w], w) for w in dict.fromkeys(wanted))


def _crop_geometry(img, start_xyz) -> CropGeometry:
    return CropGeometry(
        spacing_xyz_mm=tuple(img.GetSpacing()),
        origin_xyz_mm=tuple(img.TransformIndexToPhysicalPoint([int(v) for v in start_xyz])),
        direction=tuple(img.GetDirection()),
    )


def plan_tasks(
    images: CaseImages,
    selected: list[tuple[int, str]],
    extents: dict[int, StructureExtent],
    params: RadiomicsParams,
    *,
    margin_mm: float = DEFAULT_MARGIN_MM,
    ct=None,
) -> Iterator[StructureTask]:
    """One task per present structure, largest first (better load balance); built lazily.

    ``ct`` (optional) replaces ``images.ct`` as the intensity image (e.g. after normalisation).
    """
    import SimpleITK as sitk

    ct = images.ct if ct is None else ct
    ct_arr = sitk.GetArrayViewFromImage(ct)
    lab_arr = sitk.GetArrayViewFromImage(images.labels)
    pad = int(params.settings.get("padDistance", 5))
    base_overrides = {"label": 1, "additionalInfo": False, "normalize": False}
    rs = params.resampled_spacing_xyz_mm
    margin = margin_voxels_zyx(margin_mm, images.labels.GetSpacing())
    present = [(lab, name) for lab, name in selected if lab in extents]
    for label, name in sorted(present, key=lambda p: (-extents[p[0]].n_voxels, p[0])):
        ext = extents[label]
        common = dict(label=label, name=name, n_voxels=ext.n_voxels, params=params.params, params_sha256=params.sha256)
        try:
            yield _plan_one(images, ct, ct_arr, lab_arr, ext, common, params, rs, pad, margin, base_overrides)
        except Exception as err:  # noqa: BLE001 - one structure that cannot be cropped is a failed structure
            reason = f"could not prepare the crop ({type(err).__name__}: {err})"[:500]
            yield StructureTask(**common, planning_error=reason)


def _plan_one(images, ct, ct_arr, lab_arr, ext, common, params, rs, pad, margin, base_overrides) -> StructureTask:
    import SimpleITK as sitk

    label = ext.label
    settings = params.settings
    ct_spacing = np.array(ct.GetSpacing())
    eff = None if rs is None else effective_resampled_spacing(rs, images.labels.GetSpacing(), ext.box.size_xyz)
    if eff is not None and not np.allclose(ct_spacing, eff):
        grid = resample_grid(images.labels, ext.box.start_xyz, ext.box.size_xyz, rs, pad_distance=pad)
        mask = _resample_labels_nearest(images.labels, grid)
        ct_box = input_box_for_grid(ct, grid, max(INTERPOLATION_MARGIN_VOXELS, max(margin)))
        return StructureTask(
            **common,
            overrides={**base_overrides, "resampledPixelSpacing": None, "preCrop": False},
            image_zyx=np.ascontiguousarray(ct_arr[ct_box.slices]),
            image_geometry=_crop_geometry(ct, ct_box.start_xyz),
            mask_zyx=(sitk.GetArrayViewFromImage(mask) == label).astype(np.uint8),
            mask_geometry=CropGeometry(grid.spacing_xyz_mm, grid.origin_xyz_mm, grid.direction),
            grid=grid,
            interpolator=settings.get("interpolator", "sitkBSpline"),
        )
    # no resampling, or to the CT's own spacing: pyradiomics crops [bbox - padDistance, bbox + padDistance]
    box = ext.box.grow(tuple(max(m, pad + 1) for m in margin), tuple(lab_arr.shape))
    return StructureTask(
        **common,
        overrides=base_overrides,
        image_zyx=np.ascontiguousarray(ct_arr[box.slices]),
        image_geometry=_crop_geometry(ct, box.start_xyz),
        mask_zyx=(lab_arr[box.slices] == label).astype(np.uint8),
        mask_geometry=_crop_geometry(images.labels, box.start_xyz),
    )


def _resample_labels_nearest(labels, grid):
    """The whole label map resampled (nearest neighbour) onto ``grid``: touches only the grid's voxels."""
    import SimpleITK as sitk

    rif = sitk.ResampleImageFilter()
    rif.SetOutputSpacing(grid.spacing_xyz_mm)
    rif.SetOutputDirection(grid.direction)
    rif.SetSize(grid.size_xyz)
    rif.SetOutputOrigin(grid.origin_xyz_mm)
    rif.SetOutputPixelType(labels.GetPixelID())
    rif.SetInterpolator(sitk.sitkNearestNeighbor)
    return rif.Execute(labels)


def _crashed(task: StructureTask, err: BaseException) -> StructureResult:
    return StructureResult(
        task.label, task.name, task.n_voxels, STATUS_FAILED, f"worker process died ({type(err).__name__}: {err})"[:500]
    )


def extract_case(
    ct_path: str | Path,
    labels_path: str | Path,
    params: RadiomicsParams,
    *,
    case: str,
    workers: int = 1,
    structures: Sequence[str] | None = None,
    margin_mm: float = DEFAULT_MARGIN_MM,
) -> CaseFeatures:
    """Extract every selected structure of one case. Structure failures are results, never exceptions.

    Raises :class:`InputDataError`/:class:`SpaceMismatchError` only for case-level problems (a file
    missing or unreadable, CT and labels on different grids) and :class:`ConfigError` for unknown
    structure names.
    """
    from ctsam.progress import Progress

    if workers < 1:
        raise ConfigError("radiomics workers must be at least 1", case=case, found=str(workers))
    if margin_mm < 0:
        raise ConfigError("radiomics margin_mm must be >= 0", case=case, found=str(margin_mm))
    t0 = time.perf_counter()
    images = read_case(ct_path, labels_path, case=case)
    t_read = time.perf_counter()
    import SimpleITK as sitk

    extents = structure_extents(sitk.GetArrayViewFromImage(images.labels))
    selected = select_structures(images.names, extents, structures, case=case)
    ct = images.ct
    if params.settings.get("normalize"):
        from radiomics import imageoperations

        ct = imageoperations.normalizeImage(ct, **params.settings)
    results = [
        StructureResult(label, name, 0, STATUS_EMPTY, "no voxels with this label in the label map")
        for label, name in selected
        if label not in extents
    ]
    n_present = len(selected) - len(results)
    log.info(
        "%s: %d structure(s) to extract, %d absent, %d worker(s), params %s",
        case,
        n_present,
        len(results),
        workers,
        params.path.name,
    )
    progress = Progress(n_present, f"radiomics {case}")
    tasks = plan_tasks(images, selected, extents, params, margin_mm=margin_mm, ct=ct)
    for result in _run(tasks, workers):
        if result.status != "ok":
            log.warning(
                "%s: structure '%s' (label %d) %s: %s", case, result.name, result.label, result.status, result.reason
            )
        results.append(result)
        progress.update(item=result.name)
    t_end = time.perf_counter()
    results.sort(key=lambda r: r.label)
    ct_geom = _geometry(images.ct)
    return CaseFeatures(
        case=case,
        results=tuple(results),
        params=params,
        margin_mm=float(margin_mm),
        workers=int(workers),
        geometry={"shape_zyx": list(ct_geom.shape_zyx), "spacing_xyz_mm": list(ct_geom.spacing_xyz_mm)},
        timings_s={"read": t_read - t0, "extract": t_end - t_read, "total": t_end - t0},
    )


def _run(tasks: Iterator[StructureTask], workers: int) -> Iterator[StructureResult]:
    from ctsam.radiomics.parallel import run_tasks

    yield from run_tasks(extract_structure, tasks, workers=workers, on_crash=_crashed)
