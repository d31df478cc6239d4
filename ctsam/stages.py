"""The stage record: what every pipeline stage is, declared once.

One :class:`Stage` entry per stage says what it reads and writes (files under ``results/<case>/``,
or ``results/cohort/`` for cohort stages), which stages must run before it, whether it wants a GPU,
its thread/memory/runtime hints and conda environment, the config sections that shape its output,
the ``ctsam`` sub-command(s) that run it and the Python API function (:mod:`ctsam.api`) behind them.

Readers: the CLI (:data:`ctsam.cli.COMMANDS`), the cohort bookkeeping (:mod:`ctsam.cohort`: enabled
stages, output paths, status and failures), the Snakemake rules (``rules/common.smk``: output paths,
threads, resources, conda environments, per-stage config files) and :func:`ctsam.run_case`.
Adding a stage is one entry here plus its function in :mod:`ctsam.api` (and its command module and
rule). This module imports nothing: reading it is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CASE = "case"  # one job per case, outputs under results/<case>/
COHORT = "cohort"  # one job for the cohort, outputs under results/cohort/


@dataclass(frozen=True)
class Resources:
    """Scheduler hints of one job: CPU threads, memory (MB), wall time (minutes), conda environment."""

    threads: int = 1
    mem_mb: int = 4000
    runtime_min: int = 20
    conda: str = "ctsam.yaml"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    Attributes:
        name: stage name (workflow ``stages`` entry, Snakemake rule, log/benchmark file stem).
        scope: :data:`CASE` or :data:`COHORT`.
        outputs: files the stage writes (relative to ``results/<case>/`` or ``results/cohort/``); the
            first is the one whose presence marks the stage done.
        requires: stages that must be enabled for this one to run.
        uses: stages whose outputs it reads when they are enabled (optional inputs).
        commands: ``(sub-command, module under ctsam.commands)`` pairs; the first is the stage's
            command (``convert`` also has ``import-ct`` for image files).
        function: the :mod:`ctsam.api` function that does the work (``ctsam.<function>``).
        config_sections: config sections that shape its output (the workflow passes only these).
        resources: scheduler hints; ``variants``: hints by variant (the coarse backend).
        gpu: wants a GPU (the SLURM profile asks for one).
        temporary: its outputs are deleted once consumed (seed's prompts).
        pipeline: a ``workflow.stages`` entry counted in the cohort status (not demo or manifest).
    """

    name: str
    scope: str
    outputs: tuple[str, ...]
    requires: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    commands: tuple[tuple[str, str], ...] = ()
    function: str = ""
    config_sections: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    variants: tuple[tuple[str, Resources], ...] = ()
    gpu: bool = False
    temporary: bool = False
    pipeline: bool = True

    @property
    def command(self) -> str:
        """The ``ctsam`` sub-command that runs this stage."""
        return self.commands[0][0]

    @property
    def done_file(self) -> str:
        """The output whose presence marks the stage done."""
        return self.outputs[0]

    def resources_for(self, variant: str | None = None) -> Resources:
        """Scheduler hints, for ``variant`` when the stage has one by that name."""
        if variant is not None and not isinstance(variant, str):
            # e.g. a Snakemake input function passed where a variant name was meant
            raise TypeError(f"stage {self.name}: variant must be a name, not {type(variant).__name__}")
        return dict(self.variants).get(variant or "", self.resources)


_PIPELINE_SECTIONS = (
    "privacy",
    "convert",
    "guards",
    "coarse",
    "structures",
    "seed",
    "refine",
    "weights",
    "fuse",
    "lesions",
    "qc",
    "radiomics",
)

#: Every stage, in pipeline order (per-case stages, then cohort stages).
STAGES: tuple[Stage, ...] = (
    Stage(
        "demo",
        CASE,
        ("phantom.json",),
        commands=(("demo-cohort", "demo_cohort"),),
        function="demo_cohort",
        resources=Resources(1, 1000, 10),
        pipeline=False,
    ),
    Stage(
        "convert",
        CASE,
        ("ct.nii.gz", "ct.json"),
        commands=(("convert", "convert"), ("import-ct", "import_ct")),
        function="convert_study",
        config_sections=("convert", "guards", "privacy"),
    ),
    Stage(
        "coarse",
        CASE,
        ("coarse.nii.gz", "coarse.tsv", "coarse.json"),
        requires=("convert",),
        commands=(("coarse", "coarse"),),
        function="coarse_file",
        config_sections=("coarse",),
        resources=Resources(4, 16000, 120, "totalsegmentator.yaml"),
        variants=(("labels", Resources(1, 4000, 20)),),
    ),
    Stage(
        "seed",
        CASE,
        ("prompts.json",),
        requires=("coarse",),
        commands=(("seed", "seed"),),
        function="seed_prompts",
        config_sections=("seed", "structures"),
        temporary=True,
    ),
    Stage(
        "refine",
        CASE,
        ("refined.npz",),
        requires=("seed",),
        commands=(("refine", "refine"),),
        function="refine_structures",
        config_sections=("refine", "weights"),
        resources=Resources(1, 16000, 60),
        gpu=True,
    ),
    Stage(
        "fuse",
        CASE,
        ("labels.nii.gz", "labels.tsv", "fuse.json"),
        requires=("coarse",),
        uses=("refine",),
        commands=(("fuse", "fuse"),),
        function="fuse_labels",
        config_sections=("fuse",),
        resources=Resources(1, 8000, 20),
    ),
    Stage(
        # optional (config lesions.enabled): one-click tumours; after refine, in the case's GPU job
        "lesions",
        CASE,
        ("lesions.nii.gz", "lesions.json"),
        requires=("coarse",),
        uses=("refine",),
        commands=(("lesions", "lesions"),),
        function="segment_lesions",
        config_sections=("lesions",),
        resources=Resources(1, 8000, 30),
        gpu=True,
    ),
    Stage(
        "qc",
        CASE,
        ("qc.json",),
        requires=("fuse",),
        uses=("refine", "lesions"),
        commands=(("qc", "qc"),),
        function="qc_case",
        config_sections=("qc", "fuse"),
        resources=Resources(1, 8000, 20),
    ),
    Stage(
        "radiomics",
        CASE,
        ("radiomics.parquet", "radiomics.json"),
        requires=("fuse",),
        uses=("lesions",),
        commands=(("radiomics", "radiomics"),),
        function="extract_radiomics",
        config_sections=("radiomics",),
        resources=Resources(2, 8000, 60, "radiomics.yaml"),
    ),
    Stage(
        # optional (config export.dicomseg / export.rtstruct, DICOM inputs only): the label map as DICOM,
        # {format} = seg (DICOM-SEG) or rtstruct (RT Structure Set)
        "export",
        CASE,
        ("{format}.dcm",),
        requires=("fuse",),
        commands=(("export-seg", "export_seg"),),
        function="export_dicom",
        config_sections=("export",),
        pipeline=False,
    ),
    Stage(
        "manifest",
        CASE,
        ("manifest.json",),
        commands=(("manifest", "manifest"),),
        function="write_manifest",
        config_sections=_PIPELINE_SECTIONS,
        resources=Resources(1, 2000, 10),
        pipeline=False,
    ),
    Stage(
        "report",
        COHORT,
        ("report.html", "report_qc.parquet", "report_qc.csv"),
        requires=("qc",),
        commands=(("report", "report"),),
        function="cohort_report",
        config_sections=("qc", "report"),
        resources=Resources(1, 8000, 60),
    ),
    Stage(
        "radiomics_cohort",
        COHORT,
        ("radiomics.parquet",),
        requires=("radiomics",),
        commands=(("radiomics-cohort", "radiomics_cohort"),),
        function="radiomics_cohort",
        config_sections=("radiomics",),
        resources=Resources(1, 8000, 30, "radiomics.yaml"),
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The record of stage ``name`` (KeyError for an unknown name)."""
    return BY_NAME[name]


def pipeline_stages(scope: str | None = None) -> list[Stage]:
    """The ``workflow.stages`` stages in pipeline order, optionally only those of ``scope``."""
    return [s for s in STAGES if s.pipeline and (scope is None or s.scope == scope)]


def stage_settings(config: dict, name: str) -> dict:
    """The config sections stage ``name`` reads, as plain YAML data with keys sorted at every level.

    Exactly what the workflow passes a job (``write_stage_config`` in :mod:`ctsam.cohort`) and what
    :func:`ctsam.api.stage_config` gives a stage, so both see identical settings in identical order.
    """
    return sections_settings(config, stage(name).config_sections)


def sections_settings(config: dict, sections: tuple[str, ...]) -> dict:
    """``sections`` of ``config`` as plain YAML data with keys sorted at every level (see :func:`stage_settings`)."""
    import yaml

    own = {k: config[k] for k in sections if k in config}
    return yaml.safe_load(yaml.safe_dump(own, sort_keys=True)) or {}


def stage_commands() -> list[tuple[str, str]]:
    """``(sub-command, module)`` of every stage's CLI command(s), in pipeline order."""
    return [c for s in STAGES for c in s.commands]
