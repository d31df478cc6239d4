"""Cohort bookkeeping for the workflow: samples, case ids, enabled stages, per-case output paths, status.

Everything the Snakefile needs beyond wiring lives here, where it is unit-tested:

* :func:`load_samples` -- the cohort from a ``samples.tsv``, a folder of studies, or the demo config;
* :func:`resolve_stages` -- which per-case stages run (those configured *and* available in this ctsam);
* :data:`STAGE_FILES` / :func:`case_file` -- the per-case output layout ``<results>/<case>/<file>``;
* :func:`cohort_status` / :func:`write_status_tables` -- which cases finished, and why the others failed
  (the first line of the error in the failing stage's log), for ``results/cohort/``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ctsam.caseid import pseudonym, safe_case_id
from ctsam.errors import ConfigError, InputDataError
from ctsam.stages import CASE, COHORT, STAGES, pipeline_stages, sections_settings

log = logging.getLogger(__name__)

# Views of the stage record (ctsam/stages.py), by stage name:
#: per-case pipeline stages in order -> the ``ctsam`` sub-command that runs them
STAGE_COMMANDS: dict[str, str] = {s.name: s.command for s in pipeline_stages(CASE)}
#: cohort-level stages (run once, after the per-case ones) -> their sub-command
COHORT_COMMANDS: dict[str, str] = {s.name: s.command for s in pipeline_stages(COHORT)}
#: stages that must be enabled for a stage to run
PREREQUISITES: dict[str, tuple[str, ...]] = {s.name: s.requires for s in pipeline_stages()}
#: the file whose presence marks a stage done for a case: <results>/<case>/<file>
STAGE_FILES: dict[str, str] = {s.name: s.done_file for s in pipeline_stages(CASE)}
STATUS_COLUMNS = ("case", "status", "stages_done", "failed_stage", "reason")
FAILURE_COLUMNS = ("case", "stage", "reason")
_NIFTI = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


@dataclass(frozen=True)
class Sample:
    """One case: pseudonymous id, input CT (DICOM folder or image file), optional coarse label map and
    lesion clicks (``CLICKS.tsv`` for ``ctsam lesions``).

    ``input_id`` is the id as the sample sheet gave it (``case_id`` is its safe form, see
    :func:`ctsam.caseid.safe_case_id`); empty when the id was derived (pseudonyms, demo).
    """

    case_id: str
    path: str
    coarse_labels: str | None = None
    lesion_clicks: str | None = None
    input_id: str = ""

    @property
    def is_dicom(self) -> bool:
        return not self.path.endswith(_NIFTI)


def case_file(results_dir: str, stage: str, case_id: str = "{case}") -> str:
    """``<results>/<case>/<file>`` of ``stage`` (``{case}`` wildcard by default)."""
    return f"{results_dir}/{case_id}/{STAGE_FILES[stage]}"


def log_file(results_dir: str, stage: str, case_id: str = "{case}") -> str:
    return f"{results_dir}/{case_id}/logs/{stage}.log"


def benchmark_file(results_dir: str, stage: str, case_id: str = "{case}") -> str:
    return f"{results_dir}/{case_id}/benchmarks/{stage}.tsv"


# ---------------------------------------------------------------------------------------------- samples
def _resolve(base: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


def load_samples_tsv(path: str | os.PathLike[str], *, clicks_column: str = "lesion_clicks") -> list[Sample]:
    """Read a tab-separated sheet with columns ``case_id``, ``path`` and optionally ``coarse_labels`` and
    ``clicks_column`` (each case's lesion ``CLICKS.tsv``; an empty cell: no lesions).

    Relative paths are relative to the sheet's folder. Any case id is accepted: unsafe ones map to
    safe ids (:func:`ctsam.caseid.safe_case_id`; the map goes to ``results/cohort/case_ids.tsv``),
    an empty one to a pseudonym of the row's path. Ids must be distinct, before and after mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("sample sheet not found", path=path, fix="set workflow.samples to an existing samples.tsv")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader((line for line in fh if line.strip() and not line.startswith("#")), delimiter="\t"))
    if not rows or not {"case_id", "path"} <= set(rows[0]):
        raise ConfigError(
            "sample sheet lacks required columns",
            path=path,
            expected="tab-separated columns case_id, path (and optionally coarse_labels)",
            found=", ".join(rows[0]) if rows else "no rows",
            fix="write a header line 'case_id<TAB>path' and one line per case",
        )
    base = path.parent
    samples = []
    for n, row in enumerate(rows, start=2):
        if not (row.get("path") or "").strip():
            raise ConfigError("sample sheet row has no path", path=f"{path}:{n}", found=repr(row.get("case_id")))
        coarse = (row.get("coarse_labels") or "").strip()
        clicks = (row.get(clicks_column) or "").strip()
        raw = row["case_id"] or ""
        study = _resolve(base, row["path"].strip())
        samples.append(
            Sample(
                case_id=safe_case_id(raw) if raw.strip() else pseudonym(study),
                path=study,
                coarse_labels=_resolve(base, coarse) if coarse else None,
                lesion_clicks=_resolve(base, clicks) if clicks else None,
                input_id=raw,
            )
        )
    _check_unique_inputs(samples, str(path))
    _check_unique(samples, str(path))
    return samples


def _check_unique_inputs(samples: list[Sample], source: str) -> None:
    seen: dict[str, str] = {}
    for s in samples:
        if s.input_id and s.input_id in seen:
            raise ConfigError(
                "duplicate case id in the sample sheet",
                case=s.case_id,
                path=source,
                found=f"two rows with case id {s.input_id!r}",
                fix="give every row a distinct case_id",
            )
        seen[s.input_id] = s.path


CASE_ID_COLUMNS = ("input_id", "case_id")


def write_case_id_map(results_dir: str, samples: list[Sample], *, cohort_dir: str | None = None) -> Path:
    """Write ``<cohort>/case_ids.tsv``: every sample's input id and the case id its results use.

    Ids derived from study folder names (``workflow.case_ids: pseudonym``) or from the demo have
    no input id (``-``): folder names may carry patient names and never reach ``results/``.
    Rewritten only when its content changes.
    """
    from ctsam.io.atomic import atomic_write_text

    rows = [(s.input_id or "-", s.case_id) for s in samples]
    text = _tsv(CASE_ID_COLUMNS, rows)
    path = Path(cohort_dir or f"{results_dir}/cohort") / "case_ids.tsv"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def scan_studies_dir(
    studies_dir: str | os.PathLike[str],
    *,
    case_ids: str = "pseudonym",
    salt: str = "",
    coarse_labels_file: str | None = None,
) -> list[Sample]:
    """One case per sub-folder of ``studies_dir`` (hidden folders ignored), sorted by folder name.

    ``case_ids='pseudonym'`` names cases ``case-<hash of folder name>`` (folder names often carry
    patient names); ``'folder'`` uses the folder name (its safe form, see :func:`safe_case_id`). ``coarse_labels_file``, if given,
    is the label map's file name inside each study folder (coarse backend ``labels``).
    """
    root = Path(studies_dir)
    if not root.is_dir():
        raise ConfigError(
            "studies folder not found", path=root, fix="set workflow.studies_dir to a folder of study folders"
        )
    if case_ids not in ("pseudonym", "folder"):
        raise ConfigError("unknown case id scheme", expected="'pseudonym' or 'folder'", found=repr(case_ids))
    samples = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if case_ids == "pseudonym":
            cid, raw = pseudonym(sub.name, salt=salt), ""
        else:
            cid, raw = safe_case_id(sub.name), sub.name
        coarse = str(sub / coarse_labels_file) if coarse_labels_file else None
        samples.append(Sample(case_id=cid, path=str(sub), coarse_labels=coarse, input_id=raw))
    if not samples:
        raise ConfigError("studies folder holds no study folders", path=root, expected="one sub-folder per study")
    _check_unique(samples, str(root))
    return samples


def demo_samples(demo_dir: str, n_cases: int, *, defects: bool = False) -> list[Sample]:
    """The demo cohort's samples (known before it is written, so the workflow can generate it)."""
    from ctsam.demo.cohort import case_paths, cohort_case_ids

    return [
        Sample(
            case_id=c,
            path=str(case_paths(demo_dir, c).dicom_dir),
            coarse_labels=str(case_paths(demo_dir, c).coarse),
            lesion_clicks=str(case_paths(demo_dir, c).lesions_tsv),
        )
        for c in cohort_case_ids(n_cases, defects=defects)
    ]


def load_samples(wf: dict, *, clicks_column: str = "lesion_clicks") -> list[Sample]:
    """The cohort described by the config's ``workflow`` section.

    ``samples`` (a sheet) wins over ``studies_dir``; with neither, the demo cohort is used.
    ``clicks_column`` is the sheet's lesion-clicks column (config ``lesions.clicks_column``).
    """
    if wf.get("samples"):
        return load_samples_tsv(wf["samples"], clicks_column=clicks_column)
    if wf.get("studies_dir"):
        return scan_studies_dir(
            wf["studies_dir"],
            case_ids=wf.get("case_ids", "pseudonym"),
            salt=wf.get("pseudonym_salt", ""),
            coarse_labels_file=wf.get("coarse_labels_file"),
        )
    demo = wf.get("demo") or {}
    return demo_samples(demo.get("dir", "demo"), int(demo.get("cases", 3)), defects=bool(demo.get("defects", False)))


def _check_unique(samples: list[Sample], source: str) -> None:
    seen: dict[str, str] = {}
    for s in samples:
        if s.case_id in seen:
            raise ConfigError(
                "two inputs map to one case id",
                case=s.case_id,
                path=source,
                found=f"{seen[s.case_id]} and {s.path}",
                fix="give every case a distinct id (letters, digits, '.', '_', '-')",
            )
        seen[s.case_id] = s.path


# ---------------------------------------------------------------------------------------------- stages
def available_commands() -> set[str]:
    """The stages' sub-commands whose command module exists in this ctsam (imports nothing)."""
    from importlib.util import find_spec

    return {name for s in STAGES for name, module in s.commands if find_spec(f"ctsam.commands.{module}")}


def resolve_stages(requested: str | list[str], available: set[str]) -> list[str]:
    """Stages to run, in pipeline order (per-case stages, then cohort stages).

    ``'auto'``: every stage whose ``ctsam`` command exists and whose prerequisites run.
    A list: exactly those stages; a listed stage whose command is missing or whose prerequisite
    is not listed is a :class:`ConfigError`.
    """
    order = list(STAGE_COMMANDS) + list(COHORT_COMMANDS)
    commands = {**STAGE_COMMANDS, **COHORT_COMMANDS}
    if requested == "auto":
        enabled: list[str] = []
        for stage in order:
            if commands[stage] in available and all(p in enabled for p in PREREQUISITES[stage]):
                enabled.append(stage)
        skipped = [s for s in order if s not in enabled]
        if skipped:
            log.info(
                "stages not run (command missing in this ctsam, or a prerequisite missing): %s", ", ".join(skipped)
            )
        return enabled
    unknown = [s for s in requested if s not in commands]
    if unknown:
        raise ConfigError("unknown workflow stage", found=", ".join(unknown), expected=", ".join(order))
    for stage in requested:
        if commands[stage] not in available:
            raise ConfigError(
                f"stage '{stage}' is not available in this ctsam",
                expected=f"a 'ctsam {commands[stage]}' command",
                found="no such command",
                fix="remove it from workflow.stages or use 'auto'",
            )
        missing = [p for p in PREREQUISITES[stage] if p not in requested]
        if missing:
            raise ConfigError(
                f"stage '{stage}' needs stages that are not enabled",
                expected=", ".join(PREREQUISITES[stage]),
                found=f"missing {', '.join(missing)}",
                fix="add them to workflow.stages",
            )
    return [s for s in order if s in requested]


def lesions_active(requested: str | list[str], enabled: bool | str, *, demo: bool) -> bool:
    """Whether the optional lesion stage runs: ``lesions.enabled`` true/false, or ``'auto'`` = the demo
    cohort only (real cohorts need clicks and a real model). Listing ``lesions`` in ``workflow.stages``
    turns it on unless ``enabled`` is false."""
    if enabled is False:
        return False
    if enabled is True or (requested != "auto" and "lesions" in requested):
        return True
    return bool(demo)


def lesion_model_shipped(spec: str) -> bool:
    """Whether a lesion model spec names an existing file (``builtin:NAME`` is shipped in ctsam/resources/models)."""
    from ctsam.errors import CheckpointError
    from ctsam.resources import resolve_model_path

    try:
        return resolve_model_path(spec).exists()
    except CheckpointError:
        return False


def active_stages(requested: str | list[str], available: set[str], lesions: dict, *, demo: bool) -> list[str]:
    """The per-case and cohort stages a workflow run executes: :func:`resolve_stages` without the lesion
    stage unless :func:`lesions_active` (``'auto'`` also needs the lesion model, ``builtin:demo_lesion``
    by default, shipped)."""
    stages = resolve_stages(requested, available)
    enabled = lesions.get("enabled", "auto")
    spec = lesions.get("checkpoint")
    demo_ready = demo and (enabled is True or (spec is not None and lesion_model_shipped(spec)))
    if "lesions" in stages and not lesions_active(requested, enabled, demo=demo_ready):
        stages.remove("lesions")
    return stages


def lesion_clicks_for(sample: Sample, clicks_dir: str | None) -> str | None:
    """A case's lesion clicks: its sample-sheet cell (or the demo's table), else ``<clicks_dir>/<case>.tsv``
    when that file exists, else None (the case gets an empty lesion map)."""
    if sample.lesion_clicks:
        return sample.lesion_clicks
    if clicks_dir:
        path = Path(clicks_dir) / f"{sample.case_id}.tsv"
        if path.exists():
            return str(path)
    return None


# ---------------------------------------------------------------------------------------------- status
@dataclass(frozen=True)
class CaseStatus:
    """Where a case stands: ``ok`` (every stage done), ``failed`` (a stage left a log but no output)
    or ``incomplete`` (a stage never ran, e.g. the run was interrupted)."""

    case_id: str
    status: str
    stages_done: tuple[str, ...]
    failed_stage: str = ""
    reason: str = ""


_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b\s*(\[[^\]]*\])?\s*(?P<msg>.*)$")
_LOGGER_PREFIX = re.compile(r"^[\w.]+: ")


def reason_from_log(path: str | os.PathLike[str], *, redact: tuple[str, ...] = (), max_chars: int = 300) -> str:
    """The failure's one-line reason from a stage log.

    The last ``ERROR`` line and its indented continuation lines (expected / found / fix) joined by
    `` | ``; without one, the last non-empty line. Strings in ``redact`` (input paths, which may
    carry patient names) are replaced by ``<input>``.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "no log"
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if _ERROR_LINE.search(lines[i]):
            start = i
            break
    if start is None:
        tail = [line.strip() for line in lines if line.strip()]
        text = tail[-1] if tail else "failed without a message (killed? see the scheduler's job log)"
    else:
        match = _ERROR_LINE.search(lines[start])
        msg = _LOGGER_PREFIX.sub("", match.group("msg").strip() if match else lines[start].strip())
        parts = [msg]
        for line in lines[start + 1 : start + 6]:
            if not line.startswith("  ") or not line.strip():
                break
            parts.append(line.strip())
        text = " | ".join(parts)
    for secret in sorted((r for r in redact if r), key=len, reverse=True):
        text = text.replace(secret, "<input>")
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def case_status(results_dir: str, sample: Sample, stages: list[str]) -> CaseStatus:
    """Status of one case for the per-case ``stages`` (in pipeline order).

    A stage is done when its output exists or a later stage's does (temporary outputs such as
    the prompts are deleted once used). The first stage not done failed if it left a log
    (Snakemake keeps logs of failed jobs and deletes their outputs), else it never ran.
    """
    stages = [s for s in stages if s in STAGE_FILES]
    exists = [Path(case_file(results_dir, s, sample.case_id)).exists() for s in stages]
    n_done = max((i + 1 for i, e in enumerate(exists) if e), default=0)
    done = tuple(stages[:n_done])
    if n_done == len(stages):
        return CaseStatus(sample.case_id, "ok", done)
    stage = stages[n_done]
    log_path = Path(log_file(results_dir, stage, sample.case_id))
    if log_path.exists():
        redact = tuple(p for p in (sample.path, sample.coarse_labels) if p)
        return CaseStatus(sample.case_id, "failed", done, stage, reason_from_log(log_path, redact=redact))
    return CaseStatus(sample.case_id, "incomplete", done, stage, "not run (an earlier job failed or the run stopped)")


def cohort_status(results_dir: str, samples: list[Sample], stages: list[str]) -> list[CaseStatus]:
    return [case_status(results_dir, s, stages) for s in samples]


def _tsv(columns: tuple[str, ...], rows: list[tuple]) -> str:
    def clean(v: object) -> str:
        return str(v).replace("\t", " ").replace("\n", " ")

    return "\n".join(["\t".join(columns)] + ["\t".join(clean(v) for v in row) for row in rows]) + "\n"


def write_status_tables(
    results_dir: str, samples: list[Sample], stages: list[str], *, cohort_dir: str | None = None
) -> list[CaseStatus]:
    """Write ``<cohort>/status.tsv`` (every case) and ``<cohort>/failures.tsv`` (cases not ok).

    Files are rewritten only when their content changes (a no-op run leaves them untouched).
    """
    from ctsam.io.atomic import atomic_write_text

    statuses = cohort_status(results_dir, samples, stages)
    out = Path(cohort_dir or f"{results_dir}/cohort")
    status_rows = [(s.case_id, s.status, ",".join(s.stages_done), s.failed_stage, s.reason) for s in statuses]
    failure_rows = [(s.case_id, s.failed_stage, s.reason) for s in statuses if s.status != "ok"]
    for name, text in (
        ("status.tsv", _tsv(STATUS_COLUMNS, status_rows)),
        ("failures.tsv", _tsv(FAILURE_COLUMNS, failure_rows)),
    ):
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    n_bad = len(failure_rows)
    (log.warning if n_bad else log.info)(
        "cohort status: %d of %d cases complete%s",
        len(statuses) - n_bad,
        len(statuses),
        "; not complete: " + ", ".join(f"{c} ({st})" for c, st, _ in failure_rows) if n_bad else "",
    )
    return statuses


def run_summary(results_dir: str, statuses: list[CaseStatus], *, ok: bool, report: bool = True) -> str:
    """The lines a workflow run ends with: where the results, the report and the failure list are."""
    root = Path(results_dir).resolve()
    n_ok = sum(s.status == "ok" for s in statuses)
    failed = [s for s in statuses if s.status != "ok"]
    report_path = root / "cohort" / "report.html"
    lines = [
        "",
        "ctsam: run " + ("finished" if ok else "ended with errors (completed cases are kept)"),
        f"  results:  {root}/<case>/  ({n_ok} of {len(statuses)} cases complete)",
    ]
    if report and report_path.exists():
        lines.append(f"  report:   {report_path}")
    elif report:
        lines.append(f"  report:   not written ({report_path} is made after QC of the cases)")
    else:
        lines.append("  report:   not part of this run (add report to workflow.stages)")
    lines.append(
        f"  failures: {root / 'cohort' / 'failures.tsv'}  ({len(failed)} case(s)"
        + (
            ": "
            + ", ".join(f"{s.case_id} at {s.failed_stage}" for s in failed[:5])
            + (" ..." if len(failed) > 5 else "")
            if failed
            else ""
        )
        + ")"
    )
    lines.append(f"  status:   {root / 'cohort' / 'status.tsv'}")
    return "\n".join(lines)


def scan_results_samples(results_dir: str) -> list[Sample]:
    """Cases found as sub-folders of ``results_dir`` (for ``ctsam cohort-status`` without a sheet)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise InputDataError("results folder not found", path=root, fix="pass the workflow's results folder")
    return [Sample(case_id=p.name, path="") for p in sorted(root.iterdir()) if p.is_dir() and p.name != "cohort"]


#: config sections each stage's command reads (the rest of the config does not affect its output)
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {s.name: s.config_sections for s in STAGES}
# the optional DICOM exports (rules/export.smk: not a pipeline stage, enabled by config keys) read only `export`
STAGE_SECTIONS["export"] = ("export",)


def write_stage_config(config: dict, stage: str, folder: str | os.PathLike[str]) -> str:
    """Write the config sections ``stage`` reads to ``<folder>/<stage>-<digest>.yaml``; return the path.

    Content-addressed: the same settings always give the same file (written once), so every job
    and every re-parse of the Snakefile on a SLURM node passes identical settings to ``ctsam``,
    and a rule whose settings changed sees a new path in its params and re-runs (and only it and
    its downstream jobs do).
    """
    import yaml

    from ctsam.io.atomic import atomic_write_text
    from ctsam.provenance import config_digest

    plain = sections_settings(config, STAGE_SECTIONS[stage])
    path = Path(folder) / f"{stage}-{config_digest(plain)[:16]}.yaml"
    if not path.exists():
        atomic_write_text(
            path,
            f"# written by the ctsam workflow: the settings of stage '{stage}'\n"
            + yaml.safe_dump(plain, sort_keys=True),
        )
    return str(path)
