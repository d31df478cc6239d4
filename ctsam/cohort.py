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

from ctsam.caseid import pseudonym, sanitise_case_id
from ctsam.errors import ConfigError, InputDataError
from ctsam.stages import CASE, COHORT, STAGES, pipeline_stages, stage_settings

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
    """One case: pseudonymous id, input CT (DICOM folder or image file), optional coarse label map."""

    case_id: str
    path: str
    coarse_labels: str | None = None

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


def load_samples_tsv(path: str | os.PathLike[str]) -> list[Sample]:
    """Read a tab-separated sheet with columns ``case_id``, ``path`` and optionally ``coarse_labels``.

    Relative paths are relative to the sheet's folder. Case ids are sanitised (see
    :mod:`ctsam.caseid`) and must be unique after sanitising.
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
        samples.append(
            Sample(
                case_id=sanitise_case_id(row["case_id"] or ""),
                path=_resolve(base, row["path"].strip()),
                coarse_labels=_resolve(base, coarse) if coarse else None,
            )
        )
    _check_unique(samples, str(path))
    return samples


def scan_studies_dir(
    studies_dir: str | os.PathLike[str], *, case_ids: str = "pseudonym", salt: str = "", coarse_labels_file: str | None = None
) -> list[Sample]:
    """One case per sub-folder of ``studies_dir`` (hidden folders ignored), sorted by folder name.

    ``case_ids='pseudonym'`` names cases ``case-<hash of folder name>`` (folder names often carry
    patient names); ``'folder'`` uses the sanitised folder name. ``coarse_labels_file``, if given,
    is the label map's file name inside each study folder (coarse backend ``labels``).
    """
    root = Path(studies_dir)
    if not root.is_dir():
        raise ConfigError("studies folder not found", path=root, fix="set workflow.studies_dir to a folder of study folders")
    if case_ids not in ("pseudonym", "folder"):
        raise ConfigError("unknown case id scheme", expected="'pseudonym' or 'folder'", found=repr(case_ids))
    samples = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cid = pseudonym(sub.name, salt=salt) if case_ids == "pseudonym" else sanitise_case_id(sub.name)
        coarse = str(sub / coarse_labels_file) if coarse_labels_file else None
        samples.append(Sample(case_id=cid, path=str(sub), coarse_labels=coarse))
    if not samples:
        raise ConfigError("studies folder holds no study folders", path=root, expected="one sub-folder per study")
    _check_unique(samples, str(root))
    return samples


def demo_samples(demo_dir: str, n_cases: int) -> list[Sample]:
    """The demo cohort's samples (known before it is written, so the workflow can generate it)."""
    from ctsam.demo.cohort import case_ids, case_paths

    return [
        Sample(case_id=c, path=str(case_paths(demo_dir, c).dicom_dir), coarse_labels=str(case_paths(demo_dir, c).coarse))
        for c in case_ids(n_cases)
    ]


def load_samples(wf: dict) -> list[Sample]:
    """The cohort described by the config's ``workflow`` section.

    ``samples`` (a sheet) wins over ``studies_dir``; with neither, the demo cohort is used.
    """
    if wf.get("samples"):
        return load_samples_tsv(wf["samples"])
    if wf.get("studies_dir"):
        return scan_studies_dir(
            wf["studies_dir"], case_ids=wf.get("case_ids", "pseudonym"), salt=wf.get("pseudonym_salt", ""),
            coarse_labels_file=wf.get("coarse_labels_file"),
        )
    demo = wf.get("demo") or {}
    return demo_samples(demo.get("dir", "demo"), int(demo.get("cases", 3)))


def _check_unique(samples: list[Sample], source: str) -> None:
    seen: dict[str, str] = {}
    for s in samples:
        if s.case_id in seen:
            raise ConfigError(
                "duplicate case id after sanitising",
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
            log.info("stages not run (command missing in this ctsam, or a prerequisite missing): %s", ", ".join(skipped))
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


def write_status_tables(results_dir: str, samples: list[Sample], stages: list[str], *, cohort_dir: str | None = None) -> list[CaseStatus]:
    """Write ``<cohort>/status.tsv`` (every case) and ``<cohort>/failures.tsv`` (cases not ok).

    Files are rewritten only when their content changes (a no-op run leaves them untouched).
    """
    from ctsam.io.atomic import atomic_write_text

    statuses = cohort_status(results_dir, samples, stages)
    out = Path(cohort_dir or f"{results_dir}/cohort")
    status_rows = [(s.case_id, s.status, ",".join(s.stages_done), s.failed_stage, s.reason) for s in statuses]
    failure_rows = [(s.case_id, s.failed_stage, s.reason) for s in statuses if s.status != "ok"]
    for name, text in (("status.tsv", _tsv(STATUS_COLUMNS, status_rows)), ("failures.tsv", _tsv(FAILURE_COLUMNS, failure_rows))):
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    n_bad = len(failure_rows)
    (log.warning if n_bad else log.info)(
        "cohort status: %d of %d cases complete%s", len(statuses) - n_bad, len(statuses),
        "; not complete: " + ", ".join(f"{c} ({st})" for c, st, _ in failure_rows) if n_bad else "",
    )
    return statuses


def scan_results_samples(results_dir: str) -> list[Sample]:
    """Cases found as sub-folders of ``results_dir`` (for ``ctsam cohort-status`` without a sheet)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise InputDataError("results folder not found", path=root, fix="pass the workflow's results folder")
    return [Sample(case_id=p.name, path="") for p in sorted(root.iterdir()) if p.is_dir() and p.name != "cohort"]


#: config sections each stage's command reads (the rest of the config does not affect its output)
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {s.name: s.config_sections for s in STAGES}


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

    plain = stage_settings(config, stage)
    path = Path(folder) / f"{stage}-{config_digest(plain)[:16]}.yaml"
    if not path.exists():
        atomic_write_text(path, f"# written by the ctsam workflow: the settings of stage '{stage}'\n"
                          + yaml.safe_dump(plain, sort_keys=True))
    return str(path)
