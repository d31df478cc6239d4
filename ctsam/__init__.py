"""ctsam: cohort CT segmentation pipeline.

DICOM studies -> validated CT volumes -> coarse TotalSegmentator masks -> click prompts ->
CT-SAM3D-style promptable refinement -> fused 107-structure label maps -> QC and radiomics.

Python API (the functions the ``ctsam`` commands, evaluation and the benchmarks call; imported on
first use, so ``import ctsam`` stays cheap):

* ``run_case(input, out_dir, *, coarse_labels=None, config=None)`` -- every stage for one case
  (DICOM study folder or CT image file), writing the files the workflow writes in ``results/<case>/``;
* one function per stage -- ``convert_study``, ``import_ct``, ``coarse_file``, ``seed_prompts``,
  ``refine_structures``, ``fuse_labels``, ``segment_lesions``, ``qc_case``, ``extract_radiomics``,
  ``export_dicom``, ``write_manifest``, ``cohort_report``, ``radiomics_cohort``; file-to-file variants ``seed_file``,
  ``refine_file``, ``fuse_file``, ``lesions_file``, ``qc_file``;
* helpers -- ``load_config`` (path, dict or None -> validated config), ``load_model``, ``read_ct``,
  ``read_labelmap``, ``write_labelmap``, ``demo_cohort``; the stage record ``STAGES``.

Example::

    import ctsam
    run = ctsam.run_case("studies/patient_a", "results/case-001", config={"refine": {"device": "cuda"}})
    labels = ctsam.read_labelmap(run.out_dir / "labels.nii.gz")

Arrays are indexed (z, y, x) everywhere inside the package; world coordinates are ITK/DICOM
LPS millimetres given as (x, y, z). Heavy dependencies (torch, SimpleITK, pydicom) are imported
by the modules that need them. See ``help(ctsam.api)`` for every function's arguments.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access)
_LAZY: dict[str, str] = {
    **{
        name: "ctsam.api"
        for name in (
            "run_case",
            "CaseRun",
            "convert_study",
            "import_ct",
            "coarse_file",
            "seed_prompts",
            "seed_file",
            "refine_structures",
            "refine_file",
            "Refinement",
            "fuse_labels",
            "fuse_file",
            "segment_lesions",
            "lesions_file",
            "qc_case",
            "qc_file",
            "extract_radiomics",
            "export_dicom",
            "write_manifest",
            "cohort_report",
            "radiomics_cohort",
            "demo_cohort",
            "load_config",
            "load_model",
        )
    },
    "read_ct": "ctsam.io.image",
    "read_labelmap": "ctsam.io.image",
    "write_labelmap": "ctsam.io.image",
    "STAGES": "ctsam.stages",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ctsam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
