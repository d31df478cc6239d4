"""The demo cohort on disk: case ids, folder layout, and writing cases.

Layout under the cohort folder ``DIR``::

    DIR/samples.tsv                    case_id, path (DICOM folder), coarse_labels, truth_labels
    DIR/<case>/dicom/IM0001.dcm ...    the CT as a DICOM series
    DIR/<case>/truth.nii.gz (+ .tsv)   ground-truth labels (TotalSegmentator names), on the grid of
                                       the converted CT (see :func:`rows_bottom_up`)
    DIR/<case>/coarse.nii.gz (+ .tsv)  labels imitating a 3 mm segmenter, same grid
    DIR/<case>/lesions_truth.nii.gz    planted liver/kidney tumours (value = lesion id), same grid
    DIR/<case>/lesions.tsv             one click per lesion: lesion_id, x, y, z (world LPS mm), label
    DIR/<case>/phantom.json            parameters, coarse errors introduced, lesions, corruption if any

Case ``k`` (1-based) is ``demo-00k``; its phantom is drawn from ``(seed, k)`` alone, so one case can
be (re)written without the others and always comes out byte-identical. Its lesions come from their own
stream ``(seed, k, LESION_STREAM)`` (:mod:`ctsam.demo.lesions`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam.errors import ConfigError
from ctsam.volume import Geometry, LabelMap

log = logging.getLogger(__name__)

SAMPLES_COLUMNS = ("case_id", "path", "coarse_labels", "truth_labels")


def case_ids(n_cases: int) -> list[str]:
    """Ids of a demo cohort of ``n_cases`` cases: ``demo-001``, ``demo-002``, ..."""
    return [f"demo-{k:03d}" for k in range(1, n_cases + 1)]


def cohort_case_ids(n_cases: int, *, defects: bool = False) -> list[str]:
    """Every case id of a cohort: the ``n_cases`` clean ones, then (``defects``) one per planted defect."""
    from ctsam.demo.defects import defect_case_ids

    return case_ids(n_cases) + (defect_case_ids() if defects else [])


def corrupt_case_id(n_cases: int) -> str:
    """The case made unreadable by ``--corrupt-case`` (the last one)."""
    return case_ids(n_cases)[-1]


@dataclass(frozen=True)
class DemoCasePaths:
    """Where one demo case's files live (paths relative to the cohort folder's parent if it is relative)."""

    root: Path

    @property
    def dicom_dir(self) -> Path:
        return self.root / "dicom"

    @property
    def truth(self) -> Path:
        return self.root / "truth.nii.gz"

    @property
    def coarse(self) -> Path:
        return self.root / "coarse.nii.gz"

    @property
    def lesions_truth(self) -> Path:
        return self.root / "lesions_truth.nii.gz"

    @property
    def lesions_tsv(self) -> Path:
        return self.root / "lesions.tsv"

    @property
    def meta(self) -> Path:
        return self.root / "phantom.json"


def case_paths(cohort_dir: str | os.PathLike[str], case_id: str) -> DemoCasePaths:
    return DemoCasePaths(Path(cohort_dir) / case_id)


def _index_of(case_id: str, n_cases: int) -> int:
    from ctsam.demo.defects import defect_index, defect_of

    if defect_of(case_id):
        return defect_index(defect_of(case_id))
    ids = case_ids(n_cases)
    if case_id not in ids:
        raise ConfigError(
            "unknown demo case",
            case=case_id,
            expected=f"one of {ids[0]} .. {ids[-1]}",
            found=case_id,
            fix="pass a case id of this cohort to --only, or raise --cases",
        )
    return ids.index(case_id) + 1


def rows_bottom_up(labelmap: LabelMap) -> LabelMap:
    """The same label map on the grid ``ctsam convert`` gives the DICOM series: rows stored bottom-up.

    ``ctsam convert`` (like dcm2niix) stores image rows bottom-up, i.e. index y runs against the
    DICOM column direction. Coarse label maps made for the converted CT (as TotalSegmentator's
    would be) share that grid, so the demo writes its label maps on it. Same voxels in world space.
    """
    g = labelmap.geometry
    ny = g.shape_zyx[1]
    direction = g.direction_matrix.copy()
    direction[:, 1] *= -1
    flipped = Geometry(
        shape_zyx=g.shape_zyx,
        spacing_xyz_mm=g.spacing_xyz_mm,
        origin_xyz_mm=tuple(g.index_to_world([0, ny - 1, 0])),
        direction=direction,
    )
    return LabelMap(array=np.ascontiguousarray(labelmap.array[:, ::-1, :]), geometry=flipped, labels=labelmap.labels)


def write_case(
    cohort_dir: str | os.PathLike[str], case_id: str, *, n_cases: int, seed: int, corrupt_case: bool
) -> DemoCasePaths:
    """Write one case (DICOM series, truth, coarse labels, phantom.json) and return its paths."""
    from ctsam.demo.defects import defect_of, plant
    from ctsam.demo.dicom import write_series
    from ctsam.demo.lesions import lesion_rng, lesions_tsv_text
    from ctsam.demo.phantom import draw_spec, make_phantom
    from ctsam.io.atomic import atomic_write_json, atomic_write_text
    from ctsam.io.image import write_labelmap

    index = _index_of(case_id, n_cases)
    rng = np.random.default_rng([int(seed), index])
    spec = draw_spec(rng)
    phantom = make_phantom(spec, rng, lesion_rng=lesion_rng(seed, index))
    defect = None
    if defect_of(case_id):
        phantom, defect = plant(defect_of(case_id), phantom)
    paths = case_paths(cohort_dir, case_id)
    corrupt = corrupt_case and case_id == corrupt_case_id(n_cases)
    nz = spec.shape_zyx[0]
    skip = (nz // 2, nz // 2 + 1) if corrupt else ()
    if paths.dicom_dir.exists():
        for old in paths.dicom_dir.glob("*.dcm"):
            old.unlink()
    write_series(phantom.ct, paths.dicom_dir, case_id=case_id, seed=seed, contrast=spec.contrast, skip_slices=skip)
    write_labelmap(paths.truth, rows_bottom_up(phantom.truth))
    write_labelmap(paths.coarse, rows_bottom_up(phantom.coarse))
    if phantom.lesion_truth is not None:
        write_labelmap(paths.lesions_truth, rows_bottom_up(phantom.lesion_truth))
        atomic_write_text(paths.lesions_tsv, lesions_tsv_text(phantom.lesions))
    atomic_write_json(
        paths.meta,
        {
            "case_id": case_id,
            "seed": int(seed),
            "index": index,
            "geometry_dicom": phantom.ct.geometry.to_dict(),
            "noise_hu": round(spec.noise_hu, 3),
            "contrast": spec.contrast,
            "coarse_spacing_mm": spec.coarse_spacing_mm,
            "coarse_errors": phantom.coarse_errors,
            "corrupt": f"slices {skip[0]} and {skip[1]} (0-based) missing from the DICOM series" if corrupt else None,
            "defect": defect,
            "structures": sorted(phantom.truth.labels[i] for i in phantom.truth.present_labels()),
            "lesions": [les.to_dict() for les in phantom.lesions],
        },
    )
    log.info("wrote %s: %s%s", case_id, phantom.ct.geometry.describe(), " (corrupt)" if corrupt else "")
    return paths


def write_samples_tsv(cohort_dir: str | os.PathLike[str], n_cases: int, *, defects: bool = False) -> Path:
    """Write ``DIR/samples.tsv`` with paths relative to ``DIR``."""
    from ctsam.io.atomic import atomic_write_text

    lines = ["\t".join(SAMPLES_COLUMNS)]
    for case_id in cohort_case_ids(n_cases, defects=defects):
        p = case_paths(".", case_id)
        lines.append("\t".join([case_id, str(p.dicom_dir), str(p.coarse), str(p.truth)]))
    path = Path(cohort_dir) / "samples.tsv"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_cohort(
    cohort_dir: str | os.PathLike[str],
    *,
    n_cases: int,
    seed: int = 0,
    corrupt_case: bool = False,
    only: list[str] | None = None,
    defects: bool = False,
) -> list[str]:
    """Write the demo cohort (or only the cases in ``only``); return the case ids written."""
    if n_cases < 1:
        raise ConfigError("a demo cohort needs at least one case", expected="--cases >= 1", found=str(n_cases))
    from ctsam.progress import Progress

    ids = only if only else cohort_case_ids(n_cases, defects=defects)
    progress = Progress(len(ids), "demo cases")
    for case_id in ids:
        write_case(cohort_dir, case_id, n_cases=n_cases, seed=seed, corrupt_case=corrupt_case)
        progress.update(item=case_id)
    if not only:
        write_samples_tsv(cohort_dir, n_cases, defects=defects)
    return list(ids)
