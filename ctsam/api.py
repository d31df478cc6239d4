"""The Python API: every stage as a function, and :func:`run_case` for one case end to end.

Two kinds of functions, both used by the ``ctsam`` commands (which only parse arguments and call
them), by evaluation (:mod:`ctsam.training.evaluate`) and by the benchmarks:

* **In memory, typed objects** -- :func:`seed_prompts` (:class:`~ctsam.volume.LabelMap` ->
  :class:`~ctsam.seed.prompts.CasePrompts`), :func:`refine_structures` (CT + prompts ->
  :class:`Refinement`), :func:`fuse_labels` (coarse + refined -> :class:`~ctsam.fuse.fusion.FusionResult`),
  :func:`qc_case` (CT + label map -> QC document);
* **Files** -- what one workflow job does: :func:`convert_study`, :func:`import_ct`, :func:`coarse_file`,
  :func:`seed_file`, :func:`refine_file`, :func:`fuse_file`, :func:`qc_file`, :func:`extract_radiomics`,
  :func:`write_manifest`, and the cohort-level :func:`cohort_report` and :func:`radiomics_cohort`.

``config`` everywhere: a YAML path, a dict (partial: missing keys get their defaults) or None (the
defaults); it is validated (:func:`load_config`). Each stage reads only its own sections (see
``config_sections`` in :mod:`ctsam.stages`), as in the workflow, so :func:`run_case` writes the same
files as ``snakemake`` for the same config.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctsam.stages import CASE, pipeline_stages, stage

if TYPE_CHECKING:  # typed objects of the signatures; imported lazily at run time
    from ctsam.convert.study import ConvertResult
    from ctsam.fuse.fusion import FusionResult
    from ctsam.radiomics.extract import CaseFeatures
    from ctsam.refine.engine import RefineEngine, RefineSettings
    from ctsam.refine.refined_file import RefinedCase
    from ctsam.seed.prompts import CasePrompts
    from ctsam.volume import CTVolume, Geometry, LabelMap

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
ConfigLike = PathLike | dict | None


# ---------------------------------------------------------------------------------------------- config
def load_config(config: ConfigLike = None) -> dict:
    """The validated config with every default filled in, from a YAML path, a dict or None (defaults)."""
    from ctsam.config import load_config as load_yaml
    from ctsam.config import validate_config

    if isinstance(config, dict):
        return validate_config(config, source="config dict")
    return load_yaml(config)


def stage_config(config: ConfigLike, stage_name: str) -> dict:
    """The config a stage sees: its own sections of ``config`` (:mod:`ctsam.stages`), the rest defaults.

    The workflow passes each job exactly these settings; the API does the same, so a setting outside
    a stage's sections never changes that stage's output.
    """
    from ctsam.config import validate_config
    from ctsam.stages import stage_settings

    return validate_config(stage_settings(load_config(config), stage_name), source=f"config of stage {stage_name}")


# ---------------------------------------------------------------------------------------------- convert
def convert_study(
    study_dir: PathLike,
    output: PathLike | None,
    *,
    sidecar: PathLike | None = None,
    config: ConfigLike = None,
    series_uid: str | None = None,
    tilt: str | None = None,
) -> ConvertResult:
    """DICOM study folder -> int16 HU NIfTI ``output`` (+ JSON ``sidecar``, default beside it).

    ``output`` None writes nothing (the volume is in the result). ``series_uid`` / ``tilt`` override
    the config's series choice and gantry-tilt handling.
    """
    from ctsam.convert import ConvertOptions
    from ctsam.convert import convert_study as convert

    options = ConvertOptions.from_config(stage_config(config, "convert")["convert"], tilt=tilt, series_uid=series_uid)
    if sidecar is None and output is not None:
        sidecar = default_sidecar(output)
    return convert(study_dir, output, sidecar_path=sidecar, options=options)


def default_sidecar(output: PathLike) -> Path:
    """``CT.nii.gz`` -> ``CT.json`` beside it."""
    out = Path(output)
    name = out.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(name + ".json")


def import_ct(image: PathLike, output: PathLike, *, sidecar: PathLike | None = None, case: str | None = None) -> None:
    """CT image file (NIfTI/NRRD/MHA, HU) -> int16 HU NIfTI + JSON sidecar: convert for non-DICOM inputs."""
    from ctsam.convert.image import import_ct as import_image

    import_image(image, output, sidecar=None if sidecar is None else str(sidecar), case=case)


# ---------------------------------------------------------------------------------------------- coarse
def coarse_file(
    ct: PathLike,
    output: PathLike,
    *,
    labels: PathLike | None = None,
    backend: str | None = None,
    sidecar: PathLike | None = None,
    config: ConfigLike = None,
    case: str | None = None,
    label_table: PathLike | None = None,
    resample: bool | None = None,
    unknown: str | None = None,
    totalsegmentator: dict | None = None,
    workdir: PathLike | None = None,
    keep_workdir: bool | None = None,
) -> Any:
    """Coarse label map of one CT (``output`` + ``.tsv`` label table + ``.json`` sidecar).

    ``backend`` (default: config ``coarse.backend``): ``labels`` fits the user label map ``labels`` to
    the CT grid; ``totalsegmentator`` runs TotalSegmentator with the config's
    ``coarse.totalsegmentator`` settings updated by ``totalsegmentator``. Returns the backend's summary.
    """
    from ctsam.errors import ConfigError

    section = stage_config(config, "coarse")["coarse"]
    backend = backend or section["backend"]
    unknown = unknown or section["labels"]["unknown"]
    if backend == "labels":
        from ctsam.coarse.stage import run_labels_backend

        if not labels:
            raise ConfigError(
                "the labels backend needs a label map",
                case=case,
                expected="--labels LABELMAP.nii.gz (or .nrrd, or a folder of <name>.nii.gz masks)",
                found="no label map",
                fix="pass the label map made for this CT",
            )
        return run_labels_backend(
            ct,
            output,
            labels,
            label_table=label_table,
            resample=section["labels"]["resample"] if resample is None else resample,
            extent_tolerance_mm=section["labels"]["extent_tolerance_mm"],
            unknown=unknown,
            sidecar_path=sidecar,
            case=case,
        )
    from ctsam.coarse.stage import run_totalsegmentator_backend
    from ctsam.coarse.totalseg import TsOptions

    ts = dict(section["totalsegmentator"])
    ts.update({k: v for k, v in (totalsegmentator or {}).items() if v is not None})
    return run_totalsegmentator_backend(
        ct,
        output,
        TsOptions.from_config(ts),
        unknown=unknown,
        workdir=workdir,
        keep_workdir=bool(ts["keep_workdir"] if keep_workdir is None else keep_workdir),
        sidecar_path=sidecar,
        case=case,
    )


# ---------------------------------------------------------------------------------------------- seed
def seed_prompts(
    coarse: LabelMap, *, ct_geometry: Geometry | None = None, config: ConfigLike = None, case: str | None = None
) -> CasePrompts:
    """Click prompts (world mm) for every structure of a coarse label map.

    ``ct_geometry``, when given, must be the label map's grid (checked).
    """
    from ctsam.seed.seeding import SeedSettings, seed_case
    from ctsam.volume import check_same_space

    if ct_geometry is not None:
        check_same_space(ct_geometry, coarse.geometry, name_a="CT", name_b="coarse label map", case=case)
    return seed_case(coarse, SeedSettings.from_config(stage_config(config, "seed")))


def seed_file(
    ct: PathLike, coarse_labels: PathLike, output: PathLike, *, config: ConfigLike = None, case: str | None = None
) -> CasePrompts:
    """:func:`seed_prompts` from files: CT (for its grid) + coarse label map -> prompts JSON ``output``."""
    from ctsam.io.image import read_geometry, read_labelmap
    from ctsam.seed.prompts import write_prompts

    t0 = time.perf_counter()
    prompts = seed_prompts(read_labelmap(coarse_labels, case=case), ct_geometry=read_geometry(ct, case=case), config=config,
                   case=case)
    write_prompts(output, prompts)
    log.info("%d structures -> %d prompt sets (%d clicks), %d skipped, in %.1f s -> %s",
             len(prompts.structures), len(prompts.prompt_sets), sum(len(p.clicks) for p in prompts.prompt_sets),
             len(prompts.skipped), time.perf_counter() - t0, output)
    return prompts


# ---------------------------------------------------------------------------------------------- refine
@dataclass
class Refinement:
    """What :func:`refine_structures` returns: the refined probabilities, timing figures (s) and the device used."""

    refined: RefinedCase
    timing_s: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


def load_model(model: Any = None, *, config: ConfigLike = None, device: Any = None) -> Any:
    """A promptable model on ``device``: ``model`` as is when already loaded, else loaded from a path or
    ``builtin:NAME`` (default: config ``refine.checkpoint``)."""
    from ctsam.model import load_ctsam3d
    from ctsam.refine.predictor import resolve_device

    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    section = stage_config(config, "refine")["refine"]
    dev = device if device is not None and not isinstance(device, str) else resolve_device(device or section["device"])
    return load_ctsam3d(model or section["checkpoint"], device=dev)


def refine_engine(model: Any, settings: RefineSettings) -> RefineEngine:
    """The refinement engine over a loaded model: the one place predictor and engine are wired."""
    from ctsam.refine.engine import RefineEngine
    from ctsam.refine.predictor import PatchPredictor

    predictor = PatchPredictor(model, device=model.device, amp_bf16=settings.amp_bf16, batch_size=settings.batch_size,
                               cache_patches=settings.feature_cache_patches)
    return RefineEngine(predictor, settings)


def refine_structures(
    ct: CTVolume,
    prompts: CasePrompts,
    *,
    coarse: LabelMap | None = None,
    model: Any = None,
    settings: RefineSettings | None = None,
    config: ConfigLike = None,
    device: Any = None,
    case: str | None = None,
    deterministic: bool = True,
) -> Refinement:
    """Refine every prompted structure with the promptable network.

    Args:
        ct: the CT; ``prompts``: from :func:`seed_prompts` (on the CT's grid, checked).
        coarse: the coarse label map the prompts came from (first-round mask prompt, when the model
            was trained for it; config ``refine.coarse_mask_prompt``).
        model: a loaded model, a checkpoint path, ``builtin:NAME`` or None (config ``refine.checkpoint``).
        settings: engine settings (default: from the config's ``refine`` section).
        device: ``cpu`` / ``cuda[:N]`` / ``auto`` or a torch device (default: config ``refine.device``).
        deterministic: switch torch to deterministic kernels first (process-wide; as the workflow does).
    """
    from ctsam.refine.engine import RefineSettings
    from ctsam.refine.predictor import resolve_device, set_deterministic
    from ctsam.volume import check_same_space

    section = stage_config(config, "refine")["refine"]
    settings = settings or RefineSettings.from_config(section)
    if deterministic:
        set_deterministic()
    if model is None or isinstance(model, (str, os.PathLike)):
        dev = device if device is not None and not isinstance(device, str) else resolve_device(device or settings.device)
        model = load_model(model, config=config, device=dev)
    check_same_space(ct.geometry, prompts.ct_geometry, name_a="CT", name_b="prompts' CT grid", case=case)
    if coarse is not None:
        check_same_space(ct.geometry, coarse.geometry, name_a="CT", name_b="coarse labels", case=case)
    result, timing = refine_engine(model, settings).run(ct, prompts, case=case, coarse=coarse)
    return Refinement(result, timing, str(model.device))


def refine_file(
    ct: PathLike,
    prompts: PathLike,
    output: PathLike,
    *,
    coarse_labels: PathLike | None = None,
    checkpoint: Any = None,
    device: str | None = None,
    extra_clicks: PathLike | None = None,
    timings: PathLike | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> Refinement:
    """:func:`refine_structures` from files: CT + prompts JSON (+ coarse labels, reviewer clicks) -> ``refined.npz``.

    ``timings``: also write the timing figures (JSON; not deterministic) there.
    """
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.refine.refined_file import save_refined
    from ctsam.seed.prompts import merge_corrections, read_corrections, read_prompts

    t0 = time.perf_counter()
    case_prompts = read_prompts(prompts, case=case)
    if extra_clicks:
        corrections = read_corrections(extra_clicks, case=case)
        case_prompts = merge_corrections(case_prompts, corrections)
        log.info("merged reviewer clicks for %d structure(s) from %s", len(corrections), extra_clicks)
    ct_volume = read_ct(ct, case=case)
    coarse = read_labelmap(coarse_labels, case=case) if coarse_labels else None
    run = refine_structures(ct_volume, case_prompts, coarse=coarse, model=checkpoint, config=config, device=device, case=case)
    result, timing = run.refined, run.timing_s
    result.meta["corrections"] = bool(extra_clicks)
    save_refined(output, result)
    timing["wall_s"] = time.perf_counter() - t0
    if run.device.startswith("cuda"):
        import torch

        timing["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(run.device) / 1e9
    if timings:
        atomic_write_json(timings, {"device": run.device, **timing, "counts": result.meta["counts"]})
    c = result.meta["counts"]
    log.info("refined %d structures (%d skipped): %d patches encoded, %d decodes in %d rounds, %.1f s on %s -> %s",
             len(result.structures), len(result.skipped), c["patches_encoded"], c["decodes"], c["rounds"],
             timing["wall_s"], run.device, output)
    return run


# ---------------------------------------------------------------------------------------------- fuse
def fuse_labels(
    coarse: LabelMap, refined: RefinedCase | None = None, *, config: ConfigLike = None, case: str | None = None
) -> FusionResult:
    """Coarse label map + refined probabilities (None: coarse masks only) -> one fused label map."""
    from ctsam.fuse.fusion import fuse as fuse_maps
    from ctsam.labels import default_vocabulary

    section = stage_config(config, "fuse")["fuse"]
    vocabulary = default_vocabulary(keep_unmapped=bool(section["keep_unmapped_coarse"]))
    return fuse_maps(coarse, refined, vocabulary, section, case=case)


def fuse_file(
    coarse_labels: PathLike,
    refined: PathLike | None,
    output: PathLike,
    *,
    sidecar: PathLike | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> FusionResult:
    """:func:`fuse_labels` from files: ``labels.nii.gz`` (+ ``.tsv``) and the ``fuse.json`` sidecar."""
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_labelmap, write_labelmap
    from ctsam.refine.refined_file import load_refined

    section = stage_config(config, "fuse")["fuse"]
    coarse_map = read_labelmap(coarse_labels, case=case)
    refined_case = load_refined(refined, case=case) if refined else None
    result = fuse_labels(coarse_map, refined_case, config={"fuse": section}, case=case)
    del coarse_map, refined_case
    write_labelmap(output, result.labelmap)
    if sidecar:
        inputs = {"coarse": Path(coarse_labels).name, "refined": Path(refined).name if refined else None}
        atomic_write_json(sidecar, result.sidecar(config=section, case=case, inputs=inputs))
    return result


# ---------------------------------------------------------------------------------------------- qc
def qc_case(
    ct: CTVolume,
    labels: LabelMap,
    *,
    coarse: LabelMap | None = None,
    refined: RefinedCase | None = None,
    fusion_sources: dict[str, dict] | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> dict:
    """Per-structure QC of a fused label map (volumes, components, agreement with ``coarse``, HU,
    laterality, model confidence from ``refined``) and its flags; a JSON-able document."""
    from ctsam.qc.case import compute_case_qc
    from ctsam.qc.naming import final_name_map

    full = stage_config(config, "qc")
    name_map = final_name_map(labels.labels, keep_unmapped=bool(full["fuse"]["keep_unmapped_coarse"]))
    return compute_case_qc(ct, labels, coarse, full["qc"], refined=refined, name_map=name_map,
                           fusion_sources=fusion_sources, case=case)


def read_fusion_sources(path: PathLike, *, case: str | None = None) -> dict[str, dict]:
    """Each structure's source and reason from a ``fuse.json`` sidecar."""
    import json

    from ctsam.errors import InputDataError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return {s["name"]: {"source": s["source"], "reason": s["reason"]} for s in doc["structures"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputDataError(
            "fusion sidecar is unreadable",
            case=case,
            path=path,
            expected="the JSON written by 'ctsam fuse --sidecar'",
            found=f"{type(err).__name__}: {err}",
            fix="re-run 'ctsam fuse' for this case or drop --fuse-sidecar",
        ) from err


def qc_file(
    ct: PathLike,
    labels: PathLike,
    output: PathLike,
    *,
    coarse_labels: PathLike | None = None,
    refined: PathLike | None = None,
    fuse_sidecar: PathLike | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> dict:
    """:func:`qc_case` from files -> ``qc.json`` (inputs named by file name only)."""
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.refine.refined_file import load_refined

    final = read_labelmap(labels, case=case)
    coarse_map = read_labelmap(coarse_labels, case=case) if coarse_labels else None
    refined_case = load_refined(refined, case=case) if refined else None
    ct_volume = read_ct(ct, case=case)
    sources = read_fusion_sources(fuse_sidecar, case=case) if fuse_sidecar else None
    doc = qc_case(ct_volume, final, coarse=coarse_map, refined=refined_case, fusion_sources=sources, config=config,
             case=case)
    doc["inputs"] = {
        "ct": Path(ct).name,
        "labels": Path(labels).name,
        "coarse": Path(coarse_labels).name if coarse_labels else None,
        "refined": Path(refined).name if refined else None,
    }
    atomic_write_json(output, doc)
    return doc


# ---------------------------------------------------------------------------------------------- radiomics
def extract_radiomics(
    ct: PathLike,
    labels: PathLike,
    output: PathLike | None = None,
    *,
    config: ConfigLike = None,
    case: str | None = None,
    params: str | None = None,
    workers: int | None = None,
    structures: Sequence[str] | None = None,
    margin_mm: float | None = None,
) -> CaseFeatures:
    """pyradiomics features of every structure of one case; written as a long parquet table (+ JSON
    sidecar) when ``output`` is given. Arguments left None come from the config's ``radiomics``."""
    from ctsam.caseid import sanitise_case_id
    from ctsam.radiomics.extract import extract_case
    from ctsam.radiomics.params import load_params
    from ctsam.radiomics.table import write_case_features

    cfg = stage_config(config, "radiomics")["radiomics"]
    case = case or sanitise_case_id(_stem(Path(ct)))
    features = extract_case(
        Path(ct),
        Path(labels),
        load_params(params if params is not None else cfg["params"]),
        case=case,
        workers=workers if workers is not None else cfg["workers"],
        structures=structures if structures is not None else (cfg["structures"] or None),
        margin_mm=margin_mm if margin_mm is not None else cfg["margin_mm"],
    )
    if output is not None:
        write_case_features(output, features)
        counts = features.counts()
        log.info("%s: %s structures -> %s (read %.1f s, extract %.1f s)", case,
                 ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), output,
                 features.timings_s["read"], features.timings_s["extract"])
    return features


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# ---------------------------------------------------------------------------------------------- case record
def write_manifest(
    output: PathLike,
    *,
    case_dir: PathLike | None = None,
    case: str | None = None,
    inputs: Sequence[PathLike] = (),
    outputs: Sequence[PathLike] = (),
    checkpoints: Sequence[PathLike] = (),
    benchmarks: Sequence[PathLike] = (),
    sidecars: Sequence[PathLike] = (),
    config: ConfigLike = None,
) -> dict:
    """Write a case's ``manifest.json`` (file hashes, software versions, config digest, timings)."""
    from ctsam.io.atomic import atomic_write_json
    from ctsam.manifest import build_manifest

    doc = build_manifest(
        case=case or (Path(case_dir).name if case_dir else None),
        inputs=list(inputs),
        outputs=list(outputs),
        checkpoints=list(checkpoints),
        benchmarks=list(benchmarks),
        sidecars=list(sidecars),
        config=stage_config(config, "manifest"),
        case_dir=case_dir,
    )
    atomic_write_json(output, doc)
    return doc


# ---------------------------------------------------------------------------------------------- cohort
def cohort_report(results_dir: PathLike, output: PathLike, **options: Any) -> Any:
    """Cohort QC report (self-contained HTML) and table (parquet + CSV) from ``results/<case>/qc.json``.

    ``options``: those of :func:`ctsam.report.build.build_report` (table_stem, failures, max_snapshots, ...).
    """
    from ctsam.report.build import build_report

    return build_report(results_dir, output, **options)


def radiomics_cohort(features: Sequence[PathLike], output: PathLike, *, csv: bool = False) -> Any:
    """Per-case radiomics tables -> one wide cohort table (one row per case x structure); the table."""
    from ctsam.radiomics.table import cohort_table, write_cohort

    df, meta = cohort_table(list(features))
    written = write_cohort(output, df, meta, csv=csv)
    log.info("%d case(s), %d rows, %d feature columns (%s) -> %s", meta["n_cases"], len(df),
             df.shape[1] - 6, ", ".join(f"{n} {s}" for s, n in meta["counts"].items()), ", ".join(map(str, written)))
    return df


def demo_cohort(out_dir: PathLike, *, cases: int = 3, seed: int = 0, corrupt_case: bool = False,
                only: Sequence[str] | None = None) -> Any:
    """Write the synthetic demo cohort (DICOM series, coarse labels, ground truth) into ``out_dir``."""
    from ctsam.demo.cohort import write_cohort

    return write_cohort(out_dir, n_cases=cases, seed=seed, corrupt_case=corrupt_case,
                        only=list(only) if only else None)


# ---------------------------------------------------------------------------------------------- one case
@dataclass
class CaseRun:
    """What :func:`run_case` did: the case id, the stages run in order, and the files written by stage."""

    case: str
    out_dir: Path
    stages: list[str]
    files: dict[str, list[Path]]


@dataclass
class _Case:
    """Paths of one case while :func:`run_case` runs (inputs, ``out_dir`` files, enabled stages)."""

    case: str
    input: Path
    out: Path
    coarse_labels: Path | None
    config: ConfigLike
    stages: list[str]

    def file(self, stage_name: str, name: str | None = None) -> Path:
        return self.out / (name or stage(stage_name).done_file)


def _case_convert(c: _Case) -> None:
    if c.input.is_dir():
        convert_study(c.input, c.file("convert"), sidecar=c.file("convert", "ct.json"), config=c.config)
    else:
        import_ct(c.input, c.file("convert"), sidecar=c.file("convert", "ct.json"), case=c.case)


def _case_coarse(c: _Case) -> None:
    coarse_file(c.file("convert"), c.file("coarse"), labels=c.coarse_labels,
           backend="labels" if c.coarse_labels else None, sidecar=c.file("coarse", "coarse.json"), config=c.config,
           case=c.case)


def _case_seed(c: _Case) -> None:
    seed_file(c.file("convert"), c.file("coarse"), c.file("seed"), config=c.config, case=c.case)


def _case_refine(c: _Case) -> None:
    refine_file(c.file("convert"), c.file("seed"), c.file("refine"), coarse_labels=c.file("coarse"),
                config=c.config, case=c.case)


def _case_fuse(c: _Case) -> None:
    refined = c.file("refine") if "refine" in c.stages else None
    fuse_file(c.file("coarse"), refined, c.file("fuse"), sidecar=c.file("fuse", "fuse.json"), config=c.config,
              case=c.case)


def _case_qc(c: _Case) -> None:
    refined = c.file("refine") if "refine" in c.stages else None
    qc_file(c.file("convert"), c.file("fuse"), c.file("qc"), coarse_labels=c.file("coarse"), refined=refined,
            fuse_sidecar=c.file("fuse", "fuse.json"), config=c.config, case=c.case)


def _case_radiomics(c: _Case) -> None:
    extract_radiomics(c.file("convert"), c.file("fuse"), c.file("radiomics"), config=c.config, case=c.case)


#: per-case stage name -> what :func:`run_case` does for it (the stage's function on the case's files)
CASE_STEPS: dict[str, Callable[[_Case], None]] = {
    "convert": _case_convert,
    "coarse": _case_coarse,
    "seed": _case_seed,
    "refine": _case_refine,
    "fuse": _case_fuse,
    "qc": _case_qc,
    "radiomics": _case_radiomics,
}


def _enabled_stages(config: ConfigLike) -> list[str]:
    """Per-case stages in order: workflow.stages ('auto': all), each only when its prerequisites run."""
    requested = load_config(config)["workflow"]["stages"]
    out: list[str] = []
    for s in pipeline_stages(CASE):
        if (requested == "auto" or s.name in requested) and all(r in out for r in s.requires):
            out.append(s.name)
    return out


def run_case(
    input: PathLike,
    out_dir: PathLike,
    *,
    coarse_labels: PathLike | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> CaseRun:
    """Run every stage for one case and write the files the workflow writes in ``results/<case>/``.

    Args:
        input: a DICOM study folder or a CT image file (NIfTI/NRRD/MHA, HU).
        out_dir: the case's results folder (created); its name is the case id unless ``case`` is given.
        coarse_labels: a label map for this CT: used as the coarse masks (backend ``labels``); without
            it the config's ``coarse.backend`` runs (TotalSegmentator by default).
        config: YAML path, dict or None (defaults); ``workflow.stages`` selects the stages.

    The same inputs and config give byte-identical files to ``snakemake``'s (the prompts, temporary
    there, are deleted here too; logs and benchmarks are the workflow's own).
    """
    from ctsam.caseid import sanitise_case_id

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = _Case(
        case=sanitise_case_id(case or out.resolve().name),
        input=Path(input),
        out=out,
        coarse_labels=Path(coarse_labels) if coarse_labels else None,
        config=load_config(config),
        stages=_enabled_stages(config),
    )
    files: dict[str, list[Path]] = {}
    for name in c.stages:
        t0 = time.perf_counter()
        CASE_STEPS[name](c)
        files[name] = [p for p in (c.out / f for f in stage(name).outputs) if p.exists()]
        log.info("[%s] %s done in %.1f s", c.case, name, time.perf_counter() - t0)
    for name in c.stages:  # temporary outputs (seed's prompts), as the workflow removes them
        if stage(name).temporary:
            for p in files.pop(name):
                p.unlink(missing_ok=True)
    kept = [c.file(s) for s in c.stages if not stage(s).temporary]
    checkpoints = [_checkpoint_path(c.config)] if "refine" in c.stages else []
    write_manifest(c.out / stage("manifest").done_file, case_dir=c.out, case=c.case, inputs=[c.input], outputs=kept,
             checkpoints=checkpoints, config=c.config)
    files["manifest"] = [c.out / stage("manifest").done_file]
    return CaseRun(c.case, c.out, list(c.stages), files)


def _checkpoint_path(config: ConfigLike) -> Path:
    from ctsam.resources import resolve_model_path

    return Path(resolve_model_path(load_config(config)["refine"]["checkpoint"]))
