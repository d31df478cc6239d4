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

from ctsam.stages import stage

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
    study_uid: str | None = None,
    uneven_spacing: str | None = None,
    case: str | None = None,
) -> ConvertResult:
    """DICOM study folder -> int16 HU NIfTI ``output`` (+ JSON ``sidecar``, default beside it).

    ``output`` None writes nothing (the volume is in the result). ``series_uid`` / ``study_uid`` /
    ``tilt`` / ``uneven_spacing`` override the config's series choice and geometry handling. The
    input guards (config ``guards``) run before the NIfTI is committed; the sidecar is scrubbed as
    config ``privacy`` says.
    """
    import numpy as np

    from ctsam.convert import ConvertOptions
    from ctsam.convert import convert_study as convert
    from ctsam.guards import GuardSettings, check_ct
    from ctsam.io.atomic import atomic_write_json
    from ctsam.privacy import PrivacySettings, scrub

    cfg = stage_config(config, "convert")
    options = ConvertOptions.from_config(
        cfg.get("convert", {}), tilt=tilt, series_uid=series_uid, study_uid=study_uid, uneven_spacing=uneven_spacing
    )
    guards = GuardSettings.from_config(cfg)

    def guard(hu_range: np.ndarray, geometry: Geometry) -> None:
        check_ct(hu_range, geometry, guards, case=case)

    # a plain stack streams from the decoder into the file, never held in memory (unless no output)
    result = convert(study_dir, output, sidecar_path=None, options=options, keep_volume=output is None, guard=guard)
    if sidecar is None and output is not None:
        sidecar = default_sidecar(output)
    if sidecar is not None:
        atomic_write_json(sidecar, scrub(result.sidecar, PrivacySettings.from_config(cfg)))
    return result


def default_sidecar(output: PathLike) -> Path:
    """``CT.nii.gz`` -> ``CT.json`` beside it."""
    out = Path(output)
    name = out.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(name + ".json")


def import_ct(
    image: PathLike,
    output: PathLike,
    *,
    sidecar: PathLike | None = None,
    case: str | None = None,
    config: ConfigLike = None,
) -> None:
    """CT image file (NIfTI/NRRD/MHA, HU) -> int16 HU NIfTI + JSON sidecar: convert for non-DICOM inputs."""
    from ctsam.convert.image import import_ct as import_image

    import_image(
        image,
        output,
        sidecar=None if sidecar is None else str(sidecar),
        case=case,
        config=stage_config(config, "convert"),
    )


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
    ``coarse.totalsegmentator`` settings updated by ``totalsegmentator``; ``auto``: labels when
    ``labels`` is given, else TotalSegmentator. Returns the backend's summary.
    """
    from ctsam.errors import ConfigError

    section = stage_config(config, "coarse")["coarse"]
    backend = backend or section["backend"]
    if backend == "auto":
        backend = "labels" if labels else "totalsegmentator"
    unknown = unknown or section["labels"]["unknown"]
    if backend == "labels":
        from ctsam.coarse.stage import run_labels_backend

        if not labels:
            raise ConfigError(
                "coarse backend 'labels' needs --labels",
                case=case,
                expected="--labels LABELMAP.nii.gz (or .nrrd, or a folder of <name>.nii.gz masks)",
                found="no --labels",
                fix="pass the label map made for this CT, or set coarse.backend: auto (TotalSegmentator without labels)",
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
    prompts = seed_prompts(
        read_labelmap(coarse_labels, case=case), ct_geometry=read_geometry(ct, case=case), config=config, case=case
    )
    write_prompts(output, prompts)
    log.info(
        "%d structures -> %d prompt sets (%d clicks), %d skipped, in %.1f s -> %s",
        len(prompts.structures),
        len(prompts.prompt_sets),
        sum(len(p.clicks) for p in prompts.prompt_sets),
        len(prompts.skipped),
        time.perf_counter() - t0,
        output,
    )
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
    from ctsam.errors import CheckpointError
    from ctsam.model import load_model as load_any
    from ctsam.model import resolve_device

    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    section = stage_config(config, "refine")["refine"]
    dev = device if device is not None and not isinstance(device, str) else resolve_device(device or section["device"])
    checkpoint = model or section["checkpoint"]
    loaded = load_any(checkpoint, device=dev)
    if loaded.family != "ctsam3d":
        raise CheckpointError(
            "refine needs an anatomy refinement model (family ctsam3d)",
            path=checkpoint,
            found=f"a {loaded.family} model",
            fix="pass a CT-SAM3D checkpoint; tumour models are used by 'ctsam lesions'",
        )
    return loaded


def refine_engine(model: Any, settings: RefineSettings) -> RefineEngine:
    """The refinement engine over a loaded model: the one place predictor and engine are wired."""
    from ctsam.refine.engine import RefineEngine
    from ctsam.refine.predictor import PatchPredictor

    predictor = PatchPredictor(
        model,
        device=model.device,
        amp_bf16=settings.amp_bf16,
        batch_size=settings.batch_size,
        cache_patches=settings.feature_cache_patches,
    )
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
    from ctsam.model import resolve_device, set_deterministic
    from ctsam.refine.engine import RefineSettings
    from ctsam.volume import check_same_space

    section = stage_config(config, "refine")["refine"]
    settings = settings or RefineSettings.from_config(section)
    if deterministic:
        set_deterministic()
    if model is None or isinstance(model, (str, os.PathLike)):
        dev = (
            device if device is not None and not isinstance(device, str) else resolve_device(device or settings.device)
        )
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

    ``timings``: also write the timing figures (JSON; not deterministic) there. ``builtin:demo_*``
    weights are refused on a CT that is not a demo phantom unless config ``weights.allow_demo_weights``.
    """
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.refine.refined_file import save_refined
    from ctsam.seed.prompts import merge_corrections, read_corrections, read_prompts
    from ctsam.weights import check_demo_weights

    cfg = stage_config(config, "refine")
    checkpoint = checkpoint or cfg["refine"]["checkpoint"]
    # builtin:demo_* weights were trained on phantoms: refused on other CT unless allowed (then recorded)
    demo_on_real = check_demo_weights(checkpoint, ct, allow=cfg["weights"]["allow_demo_weights"], case=case)
    t0 = time.perf_counter()
    case_prompts = read_prompts(prompts, case=case)
    if extra_clicks:
        corrections = read_corrections(extra_clicks, case=case)
        case_prompts = merge_corrections(case_prompts, corrections)
        log.info("merged reviewer clicks for %d structure(s) from %s", len(corrections), extra_clicks)
    ct_volume = read_ct(ct, case=case)
    coarse = read_labelmap(coarse_labels, case=case) if coarse_labels else None
    run = refine_structures(
        ct_volume, case_prompts, coarse=coarse, model=checkpoint, config=config, device=device, case=case
    )
    result, timing = run.refined, run.timing_s
    result.meta["corrections"] = bool(extra_clicks)
    if demo_on_real:
        result.meta["demo_weights_on_real_ct"] = True
    save_refined(output, result)
    timing["wall_s"] = time.perf_counter() - t0
    if run.device.startswith("cuda"):
        import torch

        timing["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(run.device) / 1e9
    if timings:
        atomic_write_json(timings, {"device": run.device, **timing, "counts": result.meta["counts"]})
    c = result.meta["counts"]
    log.info(
        "refined %d structures (%d skipped): %d patches encoded, %d decodes in %d rounds, %.1f s on %s -> %s",
        len(result.structures),
        len(result.skipped),
        c["patches_encoded"],
        c["decodes"],
        c["rounds"],
        timing["wall_s"],
        run.device,
        output,
    )
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


# ---------------------------------------------------------------------------------------------- lesions
def segment_lesions(
    ct: CTVolume,
    clicks: Sequence[Any],
    *,
    checkpoints: Sequence[str] = (),
    preset: str | None = None,
    device: str | None = None,
    threshold: float | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> tuple[Any, dict[str, Any], Any]:
    """Lesions from one click each (3DSAM-adapter models): ``(LesionResult, models, device)``.

    ``clicks``: from :func:`ctsam.lesions.clicks.read_clicks` or ``clicks_from_seeds``; none gives an
    empty result. ``checkpoints``: ``[LABEL=]MODEL`` specs (default: config ``lesions.checkpoint(s)``).
    """
    import numpy as np

    from ctsam.lesions.engine import LesionEngine, LesionResult, LesionSettings
    from ctsam.lesions.models import load_models, parse_checkpoint_specs
    from ctsam.model import resolve_device, set_deterministic

    cfg = stage_config(config, "lesions")["lesions"]
    settings = LesionSettings.from_config({**cfg, **({"threshold": threshold} if threshold is not None else {})})
    specs = parse_checkpoint_specs(
        list(checkpoints),
        None if checkpoints else cfg.get("checkpoints"),
        None if checkpoints else cfg.get("checkpoint"),
    )
    dev = resolve_device(device or settings.device)
    set_deterministic()
    if not clicks:
        log.info("no lesion clicks for this case: writing an empty lesion map")
        return LesionResult(np.zeros(ct.geometry.shape_zyx, np.uint8), [], {}), {}, dev
    models = load_models(specs, preset=preset or cfg.get("preset"), device=str(dev))
    for model in models.values():
        model.to(dev)
    return LesionEngine(models, settings, dev).run(ct, list(clicks), case=case), models, dev


def lesions_file(
    ct: PathLike,
    output: PathLike,
    *,
    clicks: PathLike | None = None,
    seeds: PathLike | None = None,
    labels: PathLike | None = None,
    checkpoints: Sequence[str] = (),
    preset: str | None = None,
    device: str | None = None,
    threshold: float | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> dict:
    """:func:`segment_lesions` from files: CT + ``clicks`` (CLICKS.tsv) or ``seeds`` (seed label map; neither:
    an empty map) -> ``lesions.nii.gz`` (+ ``.tsv``) and ``lesions.json``; ``labels`` names each lesion's
    containing structure. Returns the sidecar document."""
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.lesions.clicks import check_clicks_inside, clicks_from_seeds, read_clicks
    from ctsam.lesions.engine import LesionSettings
    from ctsam.lesions.writer import write_lesions
    from ctsam.volume import check_same_space

    t0 = time.perf_counter()
    cfg = stage_config(config, "lesions")["lesions"]
    settings = LesionSettings.from_config({**cfg, **({"threshold": threshold} if threshold is not None else {})})
    ct_volume = read_ct(ct, case=case)
    label_map = None
    if labels:
        label_map = read_labelmap(labels, case=case)
        check_same_space(ct_volume.geometry, label_map.geometry, name_a="CT", name_b="label map (--labels)", case=case)
    if clicks:
        click_list = read_clicks(clicks, case=case)
        check_clicks_inside(click_list, ct_volume.geometry, case=case, path=clicks)
    elif seeds:
        seed_map = read_labelmap(seeds, case=case)
        check_same_space(ct_volume.geometry, seed_map.geometry, name_a="CT", name_b="seed label map", case=case)
        click_list = clicks_from_seeds(seed_map, case=case)
    else:
        click_list = []
    result, models, dev = segment_lesions(
        ct_volume,
        click_list,
        checkpoints=checkpoints,
        preset=preset,
        device=device,
        threshold=threshold,
        config=config,
        case=case,
    )
    compute = {"device_type": dev.type, "bf16_autocast": bool(dev.type == "cuda" and settings.amp_bf16)}
    sidecar = write_lesions(
        output,
        result,
        ct_volume.geometry,
        case=case,
        models=models,
        settings=settings,
        labels=label_map,
        extra={"compute": compute},
    )
    for rec in sidecar["lesions"]:
        for note in rec["notes"]:
            log.warning("lesion %d: %s", rec["lesion_id"], note)
    log.info(
        "%d lesion(s), %d reaching the patch border, %.1f s on %s -> %s",
        sidecar["n_lesions"],
        sidecar["n_touching_patch_border"],
        time.perf_counter() - t0,
        dev,
        output,
    )
    return sidecar


# ---------------------------------------------------------------------------------------------- qc
def qc_case(
    ct: CTVolume,
    labels: LabelMap,
    *,
    coarse: LabelMap | None = None,
    refined: RefinedCase | None = None,
    fusion_sources: dict[str, dict] | None = None,
    lesions: LabelMap | None = None,
    lesions_sidecar: dict | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> dict:
    """Per-structure QC of a fused label map (volumes, components, agreement with ``coarse``, HU,
    laterality, model confidence from ``refined``) and its flags; with a lesion map (and its
    ``lesions.json`` document) one QC row per lesion too. A JSON-able document."""
    from ctsam.qc.case import compute_case_qc
    from ctsam.qc.naming import final_name_map
    from ctsam.volume import check_same_space

    full = stage_config(config, "qc")
    name_map = final_name_map(labels.labels, keep_unmapped=bool(full["fuse"]["keep_unmapped_coarse"]))
    doc = compute_case_qc(
        ct, labels, coarse, full["qc"], refined=refined, name_map=name_map, fusion_sources=fusion_sources, case=case
    )
    if lesions is not None:
        from ctsam.qc.lesions import lesion_qc

        check_same_space(ct.geometry, lesions.geometry, name_a="CT", name_b="lesion map", case=case)
        lq = lesion_qc(ct, lesions, labels, lesions_sidecar, full["qc"])
        doc["lesions"] = lq["lesions"]
        doc["lesion_summary"] = lq["summary"]
    return doc


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
    lesions: PathLike | None = None,
    config: ConfigLike = None,
    case: str | None = None,
) -> dict:
    """:func:`qc_case` from files -> ``qc.json`` (inputs named by file name only); ``lesions``: a lesion
    map from :func:`lesions_file` (its ``.json`` beside it)."""
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, read_labelmap
    from ctsam.refine.refined_file import load_refined

    final = read_labelmap(labels, case=case)
    coarse_map = read_labelmap(coarse_labels, case=case) if coarse_labels else None
    refined_case = load_refined(refined, case=case) if refined else None
    ct_volume = read_ct(ct, case=case)
    sources = read_fusion_sources(fuse_sidecar, case=case) if fuse_sidecar else None
    lesion_map = lesion_doc = None
    if lesions:
        from ctsam.lesions.writer import read_lesions_sidecar

        lesion_map, lesion_doc = read_labelmap(lesions, case=case), read_lesions_sidecar(lesions)
    doc = qc_case(
        ct_volume,
        final,
        coarse=coarse_map,
        refined=refined_case,
        fusion_sources=sources,
        lesions=lesion_map,
        lesions_sidecar=lesion_doc,
        config=config,
        case=case,
    )
    doc["inputs"] = {
        "ct": Path(ct).name,
        "labels": Path(labels).name,
        "coarse": Path(coarse_labels).name if coarse_labels else None,
        "refined": Path(refined).name if refined else None,
        **({"lesions": Path(lesions).name} if lesions else {}),
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
    lesions: PathLike | None = None,
) -> CaseFeatures:
    """pyradiomics features of every structure of one case (and, with a lesion map from
    :func:`lesions_file`, of every lesion as ``lesion_<id>``); written as a long parquet table (+ JSON
    sidecar) when ``output`` is given. Arguments left None come from the config's ``radiomics``.

    A case without a single feature row is an :class:`~ctsam.errors.InputDataError` (a finding).
    """
    import dataclasses

    from ctsam.caseid import sanitise_case_id
    from ctsam.errors import InputDataError
    from ctsam.radiomics.extract import extract_case
    from ctsam.radiomics.params import load_params
    from ctsam.radiomics.table import write_case_features

    cfg = stage_config(config, "radiomics")["radiomics"]
    case = case or sanitise_case_id(_stem(Path(ct)))
    loaded = load_params(params if params is not None else cfg["params"])
    n_workers = workers if workers is not None else cfg["workers"]
    margin = margin_mm if margin_mm is not None else cfg["margin_mm"]
    features = extract_case(
        Path(ct),
        Path(labels),
        loaded,
        case=case,
        workers=n_workers,
        structures=structures if structures is not None else (cfg["structures"] or None),
        margin_mm=margin,
    )
    if lesions:  # every lesion (the structures filter applies to the label map only)
        from ctsam.lesions.writer import read_lesions_sidecar

        lesion_features = extract_case(Path(ct), Path(lesions), loaded, case=case, workers=n_workers, margin_mm=margin)
        sidecar = read_lesions_sidecar(lesions) or {"lesions": []}
        by_name = {rec["name"]: rec for rec in sidecar["lesions"]}
        info = {
            r.name: {"lesion_id": r.label, "containing_structure": by_name.get(r.name, {}).get("containing_structure")}
            for r in lesion_features.results
        }
        timings = {
            k: features.timings_s.get(k, 0.0) + lesion_features.timings_s.get(k, 0.0) for k in features.timings_s
        }
        features = dataclasses.replace(
            features, results=features.results + lesion_features.results, lesions=info, timings_s=timings
        )
    counts = features.counts()
    if sum(len(r.features) for r in features.results) == 0:
        # an empty table is a finding, not a success: the case fails here and is listed in failures.tsv
        raise InputDataError(
            "radiomics extracted no features for this case",
            case=case,
            expected="at least one structure with features",
            found=(
                f"{len(features.results)} structures ("
                + (", ".join(f"{n} {st}" for st, n in sorted(counts.items())) or "the label map is empty")
                + "), 0 feature rows"
            ),
            fix="check the label map (qc.json flags empty_labelmap) and radiomics.structures",
        )
    if output is not None:
        write_case_features(output, features)
        log.info(
            "%s: %s structures -> %s (read %.1f s, extract %.1f s)",
            case,
            ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
            output,
            features.timings_s["read"],
            features.timings_s["extract"],
        )
    return features


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# ---------------------------------------------------------------------------------------------- case record
def export_dicom(
    labels: PathLike,
    dicom_dir: PathLike,
    output: PathLike,
    *,
    fmt: str = "seg",
    config: ConfigLike = None,
    case: str | None = None,
    identity: str | None = None,
    transfer_syntax: str | None = None,
) -> Path:
    """Export a label map as DICOM-SEG (``fmt="seg"``) or RTSTRUCT (``fmt="rtstruct"``) referencing the
    source series in ``dicom_dir``; the patient/study identity is copied or removed per ``export.identity``
    (or ``identity``). Returns ``output``."""
    from ctsam.io.image import read_labelmap

    export = stage_config(config, "export").get("export") or {}
    identity = identity or export.get("identity", "copy")
    salt = str(export.get("uid_salt", ""))
    labelmap = read_labelmap(labels, case=case)
    if fmt == "rtstruct":
        from ctsam.export.rtstruct import export_rtstruct

        export_rtstruct(labelmap, dicom_dir, output, case=case, identity=identity, uid_salt=salt)
    else:
        from ctsam.export.dicomseg import export_seg

        kwargs = {"transfer_syntax": transfer_syntax} if transfer_syntax else {}
        export_seg(labelmap, dicom_dir, output, case=case, identity=identity, uid_salt=salt, **kwargs)
    return Path(output)


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
    log.info(
        "%d case(s), %d rows, %d feature columns (%s) -> %s",
        meta["n_cases"],
        len(df),
        df.shape[1] - 6,
        ", ".join(f"{n} {s}" for s, n in meta["counts"].items()),
        ", ".join(map(str, written)),
    )
    return df


def demo_cohort(
    out_dir: PathLike,
    *,
    cases: int = 3,
    seed: int = 0,
    corrupt_case: bool = False,
    only: Sequence[str] | None = None,
    defects: bool = False,
) -> Any:
    """Write the synthetic demo cohort (DICOM series, coarse labels, ground truth) into ``out_dir``;
    ``defects`` adds one case per planted QC defect."""
    from ctsam.demo.cohort import write_cohort

    return write_cohort(
        out_dir, n_cases=cases, seed=seed, corrupt_case=corrupt_case, only=list(only) if only else None, defects=defects
    )


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
    lesion_clicks: Path | None
    config: dict
    stages: list[str]

    def file(self, stage_name: str, name: str | None = None) -> Path:
        return self.out / (name or stage(stage_name).done_file)


def _case_convert(c: _Case) -> None:
    if c.input.is_dir():
        convert_study(c.input, c.file("convert"), sidecar=c.file("convert", "ct.json"), config=c.config, case=c.case)
    else:
        import_ct(c.input, c.file("convert"), sidecar=c.file("convert", "ct.json"), case=c.case, config=c.config)


def _case_coarse(c: _Case) -> None:
    coarse_file(
        c.file("convert"),
        c.file("coarse"),
        labels=c.coarse_labels,
        backend="labels" if c.coarse_labels else None,
        sidecar=c.file("coarse", "coarse.json"),
        config=c.config,
        case=c.case,
    )


def _case_seed(c: _Case) -> None:
    seed_file(c.file("convert"), c.file("coarse"), c.file("seed"), config=c.config, case=c.case)


def _case_refine(c: _Case) -> None:
    refine_file(
        c.file("convert"),
        c.file("seed"),
        c.file("refine"),
        coarse_labels=c.file("coarse"),
        config=c.config,
        case=c.case,
    )


def _case_fuse(c: _Case) -> None:
    refined = c.file("refine") if "refine" in c.stages else None
    fuse_file(
        c.file("coarse"), refined, c.file("fuse"), sidecar=c.file("fuse", "fuse.json"), config=c.config, case=c.case
    )


def _case_lesions(c: _Case) -> None:
    section = c.config["lesions"]
    labels = c.file("coarse") if section["containing_labels"] == "coarse" else None
    lesions_file(
        c.file("convert"),
        c.file("lesions"),
        clicks=c.lesion_clicks,
        labels=labels,
        checkpoints=_lesion_checkpoint_specs(c.config),
        config=c.config,
        case=c.case,
    )


def _case_qc(c: _Case) -> None:
    refined = c.file("refine") if "refine" in c.stages else None
    lesions = c.file("lesions") if "lesions" in c.stages else None
    qc_file(
        c.file("convert"),
        c.file("fuse"),
        c.file("qc"),
        coarse_labels=c.file("coarse"),
        refined=refined,
        fuse_sidecar=c.file("fuse", "fuse.json"),
        lesions=lesions,
        config=c.config,
        case=c.case,
    )


def _case_radiomics(c: _Case) -> None:
    lesions = c.file("lesions") if "lesions" in c.stages else None
    extract_radiomics(
        c.file("convert"), c.file("fuse"), c.file("radiomics"), config=c.config, case=c.case, lesions=lesions
    )


def _lesion_checkpoint_files(config: dict) -> dict[str, str]:
    """{click label ('' = default): model file} of the lesion stage, resolved as the workflow does."""
    from ctsam.resources import resolve_model_path

    section = config["lesions"]
    specs = {"": section["checkpoint"], **section["checkpoints"]}
    return {label: str(resolve_model_path(spec)) for label, spec in specs.items()}


def _lesion_checkpoint_specs(config: dict) -> list[str]:
    return [f"{label}={path}" if label else path for label, path in sorted(_lesion_checkpoint_files(config).items())]


#: per-case stage name -> what :func:`run_case` does for it (the stage's function on the case's files)
CASE_STEPS: dict[str, Callable[[_Case], None]] = {
    "convert": _case_convert,
    "coarse": _case_coarse,
    "seed": _case_seed,
    "refine": _case_refine,
    "fuse": _case_fuse,
    "lesions": _case_lesions,
    "qc": _case_qc,
    "radiomics": _case_radiomics,
}


def _enabled_stages(config: dict, *, lesion_clicks: bool) -> list[str]:
    """Per-case stages in order, chosen as the workflow chooses them (``workflow.stages``; the lesion
    stage per ``lesions.enabled``, where 'auto' means: when the case has lesion clicks)."""
    from ctsam.cohort import active_stages, available_commands

    stages = active_stages(config["workflow"]["stages"], available_commands(), config["lesions"], demo=lesion_clicks)
    return [s for s in stages if s in CASE_STEPS]


def run_case(
    input: PathLike,
    out_dir: PathLike,
    *,
    coarse_labels: PathLike | None = None,
    config: ConfigLike = None,
    case: str | None = None,
    lesion_clicks: PathLike | None = None,
) -> CaseRun:
    """Run every stage for one case and write the files the workflow writes in ``results/<case>/``.

    Args:
        input: a DICOM study folder or a CT image file (NIfTI/NRRD/MHA, HU).
        out_dir: the case's results folder (created); its name is the case id unless ``case`` is given.
        coarse_labels: a label map for this CT: used as the coarse masks (backend ``labels``); without
            it the config's ``coarse.backend`` runs (TotalSegmentator by default).
        config: YAML path, dict or None (defaults); ``workflow.stages`` selects the stages.
        lesion_clicks: a CLICKS.tsv (lesion_id, x, y, z world mm [, label]): runs the lesion stage
            (config ``lesions.enabled``: true, or auto when clicks are given).

    The same inputs and config give byte-identical files to ``snakemake``'s (the prompts, temporary
    there, are deleted here too; logs and benchmarks are the workflow's own).
    """
    from ctsam.caseid import sanitise_case_id

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = load_config(config)
    c = _Case(
        case=sanitise_case_id(case or out.resolve().name),
        input=Path(input),
        out=out,
        coarse_labels=Path(coarse_labels) if coarse_labels else None,
        lesion_clicks=Path(lesion_clicks) if lesion_clicks else None,
        config=full,
        stages=_enabled_stages(full, lesion_clicks=lesion_clicks is not None),
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
    if "lesions" in c.stages:
        checkpoints += [Path(p) for p in sorted(set(_lesion_checkpoint_files(c.config).values()))]
    write_manifest(
        c.out / stage("manifest").done_file,
        case_dir=c.out,
        case=c.case,
        inputs=[c.input],
        outputs=kept,
        checkpoints=checkpoints,
        config=c.config,
    )
    files["manifest"] = [c.out / stage("manifest").done_file]
    return CaseRun(c.case, c.out, list(c.stages), files)


def _checkpoint_path(config: ConfigLike) -> Path:
    from ctsam.resources import resolve_model_path

    return Path(resolve_model_path(load_config(config)["refine"]["checkpoint"]))
