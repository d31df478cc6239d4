"""Preflight of a workflow run: everything that can be checked before the first job, in seconds, offline.

Called by ``rules/common.smk`` when Snakemake parses the workflow (so also by ``snakemake -n`` and
by a run whose results are all up to date). It reads no image and imports no heavy package:

* inputs: every case's study (or CT file) exists and is readable; a case on the ``labels`` coarse
  backend has its label map;
* the coarse backend each case needs (:func:`case_backend`): TotalSegmentator installed and every
  weight file of the configured mode present (:mod:`ctsam.coarse.weights`);
* the ``python`` on PATH, which every job runs, has ctsam's packages (a venv not activated);
* the Python packages each planned stage imports (else: which extra to install);
* the refine checkpoint exists and its header reads as a checkpoint; ``builtin:demo_*`` weights
  only on the demo cohort unless ``weights.allow_demo_weights``;
* every lesion model loads (header), demo lesion models only on the demo cohort;
* the radiomics parameter file exists.

Problems of one case (a missing study) let the other cases run: a real run warns and that case
fails alone; a dry run (``-n``) reports them as errors. Problems that affect every case (a missing
backend, weights, package, checkpoint) always stop the run before any job starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ctsam.errors import ConfigError

#: Python packages (import name, pip extra) each stage imports; coarse depends on its backend
STAGE_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "convert": (("pydicom", "core"), ("SimpleITK", "core")),
    "seed": (("scipy", "core"),),
    "refine": (("torch", "core"), ("safetensors", "core")),
    "lesions": (("torch", "core"), ("safetensors", "core")),
    "fuse": (("scipy", "core"),),
    "qc": (("scipy", "core"),),
    "radiomics": (("radiomics", "radiomics"),),
    "report": (("matplotlib", "core"),),
    "radiomics_cohort": (("pyarrow", "core"),),
}
BACKEND_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "totalsegmentator": (("totalsegmentator", "totalseg"), ("nnunetv2", "totalseg")),
    "labels": (("nibabel", "core"),),
}
DEMO_WEIGHTS_PREFIX = "builtin:demo_"
_MAX_CASES_SHOWN = 5


@dataclass(frozen=True)
class Problem:
    """One thing that would make a job fail: what, the config key (or sheet column), the fix."""

    what: str
    key: str
    fix: str
    cases: tuple[str, ...] = ()

    def render(self) -> str:
        who = ""
        if self.cases:
            shown = ", ".join(self.cases[:_MAX_CASES_SHOWN])
            more = len(self.cases) - _MAX_CASES_SHOWN
            who = f"case{'s' if len(self.cases) > 1 else ''} {shown}{f' (+{more} more)' if more > 0 else ''}: "
        return f"    - {who}{self.what}\n        key: {self.key}\n        fix: {self.fix}"


@dataclass
class PreflightResult:
    """Problems that stop every case (``blocking``) and those of single cases (``per_case``)."""

    blocking: list[Problem] = field(default_factory=list)
    per_case: list[Problem] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.blocking and not self.per_case

    def error(self, *, include_cases: bool = True) -> ConfigError:
        problems = self.blocking + (self.per_case if include_cases else [])
        return ConfigError(
            f"preflight: {len(problems)} problem{'s' if len(problems) != 1 else ''} before any job starts",
            found="\n" + "\n".join(p.render() for p in problems),
            fix="fix each item above, then run again (`snakemake -n` repeats these checks in seconds)",
        )

    def warning_text(self) -> str:
        return "preflight: these cases will fail (the others run):\n" + "\n".join(p.render() for p in self.per_case)


# ---------------------------------------------------------------------------------------------- backend
def case_backend(configured: str, coarse_labels: str | None) -> str:
    """The coarse backend of one case: ``configured`` unless ``auto``, where a case with a label map
    uses it and any other case TotalSegmentator."""
    if configured != "auto":
        return configured
    return "labels" if coarse_labels else "totalsegmentator"


def drop_missing_auto_labels(samples: Sequence[Any], configured: str, from_studies_dir: bool) -> list[Any]:
    """With ``auto`` and a studies folder, a study without the ``coarse_labels_file`` is a
    TotalSegmentator case (forget the label path); sheets keep theirs (a missing file is an error)."""
    if configured != "auto" or not from_studies_dir:
        return list(samples)
    return [
        s if not s.coarse_labels or Path(s.coarse_labels).exists() else replace(s, coarse_labels=None) for s in samples
    ]


# ---------------------------------------------------------------------------------------------- checks
def _readable(path: Path) -> str | None:
    try:
        if not path.exists():
            return "does not exist"
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                return "folder is not readable (permission denied)"
            if not any(path.iterdir()):
                return "folder is empty"
            return None
        if not os.access(path, os.R_OK):
            return "file is not readable (permission denied)"
        if path.stat().st_size == 0:
            return "file is empty (0 bytes)"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return None


def _group(problems: Iterable[tuple[str, str, str, str]]) -> list[Problem]:
    """(case, what, key, fix) rows -> one Problem per (what, key, fix) listing its cases."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for case, what, key, fix in problems:
        grouped.setdefault((what, key, fix), []).append(case)
    return [Problem(what, key, fix, tuple(cases)) for (what, key, fix), cases in grouped.items()]


def check_inputs(samples: Sequence[Any], backends: dict[str, str], wf: dict) -> list[Problem]:
    """Every case's study/CT and (labels backend) label map exist and are readable."""
    source_key = "workflow.samples (column path)" if wf.get("samples") else "workflow.studies_dir"
    labels_key = "workflow.samples (column coarse_labels)" if wf.get("samples") else "workflow.coarse_labels_file"
    rows = []
    for s in samples:
        why = _readable(Path(s.path))
        if why:
            rows.append(
                (s.case_id, f"study or CT {why}", source_key, "correct the path, or remove the case from the cohort")
            )
        if backends.get(s.case_id) == "labels":
            if not s.coarse_labels:
                rows.append(
                    (
                        s.case_id,
                        "coarse backend 'labels' but no label map given",
                        labels_key,
                        (
                            "give the case a coarse_labels file, or set coarse.backend: auto (TotalSegmentator "
                            "for cases without one)"
                        ),
                    )
                )
            else:
                why = _readable(Path(s.coarse_labels))
                if why:
                    rows.append(
                        (
                            s.case_id,
                            f"coarse label map {why}",
                            labels_key,
                            (
                                "correct the label map path, or set coarse.backend: auto to use TotalSegmentator "
                                "for cases without labels"
                            ),
                        )
                    )
    return _group(rows)


def _cases_of(backends: dict[str, str], backend: str) -> tuple[str, ...]:
    return tuple(sorted(c for c, b in backends.items() if b == backend))


def check_totalsegmentator(config: dict, cases: tuple[str, ...], *, check_executable: bool = True) -> list[Problem]:
    """TotalSegmentator on PATH (or at the configured path) and every weight file of its mode present."""
    from ctsam.coarse.weights import check_weights, default_weights_root

    ts = config["coarse"]["totalsegmentator"]
    problems = []
    exe = ts["executable"]
    if check_executable and not (shutil.which(exe) or (os.sep in exe and Path(exe).is_file())):
        problems.append(
            Problem(
                f"TotalSegmentator program '{exe}' not found on PATH",
                "coarse.totalsegmentator.executable",
                "install the extra (pip install 'ctsam[totalseg]', or make demo/test which installs every extra), "
                "set the key to its path, or give these cases a coarse_labels map (coarse.backend: auto)",
                cases,
            )
        )
    root = ts["weights_path"] or default_weights_root()
    report = check_weights(ts["mode"], roi_subset=bool(ts["roi_subset"]), robust_crop=ts["robust_crop"], root=root)
    if not report.ok:
        missing = len(report.problems)
        cmds = " and ".join(f"`{c}`" for c in report.download_commands())
        problems.append(
            Problem(
                f"TotalSegmentator weights for mode '{ts['mode']}' incomplete in {report.root}: {missing} of "
                f"{len(report.required)} files missing or unusable (list: ctsam weights check)",
                "coarse.totalsegmentator.weights_path (or $TOTALSEG_WEIGHTS_PATH)",
                f"on a machine with internet run {cmds} (or ctsam weights fetch totalseg), copy the folders to "
                f"{report.root}; or choose another coarse.totalsegmentator.mode",
                cases,
            )
        )
    return problems


def check_packages(stages: Sequence[str], backends_used: Iterable[str]) -> list[Problem]:
    """Every Python package a planned stage imports is importable (found without importing it)."""
    needed: dict[str, tuple[str, list[str]]] = {}
    for stage in stages:
        for module, extra in STAGE_PACKAGES.get(stage, ()):
            needed.setdefault(module, (extra, []))[1].append(stage)
    for backend in sorted(set(backends_used)):
        for module, extra in BACKEND_PACKAGES.get(backend, ()):
            needed.setdefault(module, (extra, []))[1].append(f"coarse ({backend})")
    problems = []
    for module, (extra, users) in needed.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            fix = (
                f"pip install 'ctsam[{extra}]' (or make demo/test, which installs every extra)"
                if extra != "core"
                else "reinstall ctsam (make clean-venv && make test)"
            )
            key = "workflow.stages" if not any(u.startswith("coarse (") for u in users) else "coarse.backend"
            problems.append(
                Problem(
                    f"Python package '{module}' is not installed; needed by stage {', '.join(sorted(set(users)))}",
                    key,
                    fix + f", or remove the stage from {key}" if key == "workflow.stages" else fix,
                )
            )
    return problems


def check_job_python(env_path: str | None = None) -> list[Problem]:
    """Workflow jobs run ``python -m ctsam`` from PATH: that interpreter must be there and have ctsam's
    core packages (a venv used without activating it is the usual cause)."""
    import subprocess
    import sys

    found = shutil.which("python", path=env_path)
    # not resolved: a venv's python is a symlink to the base interpreter, its identity is the link's folder
    if found and Path(os.path.abspath(found)).parent == Path(os.path.abspath(sys.executable)).parent:
        return []
    fix = (f"activate the environment that runs Snakemake (. {Path(sys.executable).parent}/activate), or put "
           f"{Path(sys.executable).parent} first on PATH (make demo / make test do this)")
    if not found:
        return [Problem("no 'python' on PATH: every job runs `python -m ctsam`", "PATH", fix)]
    try:
        proc = subprocess.run([found, "-c", "import numpy, pydicom, SimpleITK, yaml"], capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return [Problem(f"'python' on PATH ({found}) cannot run: {err}", "PATH", fix)]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return [Problem(f"jobs would run {found}, which lacks ctsam's packages ({last}); Snakemake runs on "
                        f"{sys.executable}", "PATH", fix)]
    return []


def checkpoint_problem(spec: str, *, meta_key: str | None = "ctsam") -> str | None:
    """Why the checkpoint ``spec`` cannot load (None: its header reads as a ctsam .safetensors or a
    torch archive). Reads the header only; imports no torch. ``meta_key``: metadata entry a
    .safetensors file must carry (None: any)."""
    from ctsam.errors import CtsamError
    from ctsam.resources import resolve_model_path

    try:
        path = resolve_model_path(spec)
    except CtsamError as err:
        return err.one_line()
    why = _readable(path)
    if why:
        return f"{path}: {why}"
    if path.is_dir():
        return f"{path}: is a folder, not a checkpoint file"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) == 8 and int.from_bytes(head, "little") < size:
            n = int.from_bytes(head, "little")
            raw = fh.read(n)
            if raw[:1] == b"{":
                try:
                    header = json.loads(raw)
                except ValueError:
                    return f"{path}: safetensors header is not valid JSON (truncated or corrupt copy?)"
                tensors = [k for k in header if k != "__metadata__"]
                ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
                if not tensors:
                    return f"{path}: safetensors file holds no tensors"
                if 8 + n + max(ends) > size:
                    return f"{path}: truncated ({size} bytes, header promises {8 + n + max(ends)})"
                if meta_key and meta_key not in (header.get("__metadata__") or {}):
                    return f"{path}: a safetensors file without ctsam model metadata (convert it: ctsam model convert)"
                return None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if not any(n.endswith("data.pkl") for n in zf.namelist()):
                return f"{path}: a zip archive but not a torch checkpoint (no data.pkl)"
        return None
    with open(path, "rb") as fh:
        if fh.read(1) == b"\x80":
            return None  # legacy torch pickle; refine loads it with weights_only=True
    return f"{path}: neither a ctsam .safetensors nor a torch params.pth (truncated or wrong file?)"


def check_refine(config: dict, *, demo: bool) -> list[Problem]:
    spec = str(config["refine"]["checkpoint"])
    problems = []
    why = checkpoint_problem(spec)
    if why:
        problems.append(
            Problem(
                f"refine checkpoint cannot be loaded: {why}",
                "refine.checkpoint",
                "point it at the CT-SAM3D params.pth or a ctsam .safetensors "
                "(ctsam weights list / fetch ctsam3d; docs/weights.md)",
            )
        )
    if spec.startswith(DEMO_WEIGHTS_PREFIX) and not demo and not config["weights"]["allow_demo_weights"]:
        problems.append(
            Problem(
                f"refine.checkpoint is '{spec}', trained on demo phantoms only, and this cohort is not the demo",
                "refine.checkpoint",
                "fetch the real CT-SAM3D weights (ctsam weights fetch ctsam3d on a login node) and set refine.checkpoint "
                "to them, or remove refine from workflow.stages; weights.allow_demo_weights: true runs the demo model "
                "anyway (report and manifest then say so)",
            )
        )
    return problems


def check_lesions(config: dict, *, demo: bool) -> list[Problem]:
    """Every lesion model (default and per click label) loadable; demo models only on the demo cohort;
    the clicks folder exists."""
    les = config["lesions"]
    problems = []
    models = [("lesions.checkpoint", str(les["checkpoint"]))]
    models += [(f"lesions.checkpoints.{label}", str(spec)) for label, spec in sorted(les["checkpoints"].items())]
    for key, spec in models:
        why = checkpoint_problem(spec, meta_key=None)
        if why:
            problems.append(
                Problem(
                    f"lesion model cannot be loaded: {why}",
                    key,
                    "point it at a 3DSAM-adapter .pth or a ctsam .safetensors (ctsam weights list: "
                    "3dsam_*; docs/lesions.md)",
                )
            )
        if spec.startswith(DEMO_WEIGHTS_PREFIX) and not demo and not config["weights"]["allow_demo_weights"]:
            problems.append(
                Problem(
                    f"{key} is '{spec}', trained on demo phantoms only, and this cohort is not the demo",
                    key,
                    "use a published 3DSAM-adapter model (ctsam weights fetch 3dsam_<task> --from "
                    "file:///PATH), set lesions.enabled: false, or weights.allow_demo_weights: true",
                )
            )
    if les["clicks_dir"] and not Path(les["clicks_dir"]).is_dir():
        problems.append(
            Problem(
                f"lesion clicks folder {les['clicks_dir']} does not exist",
                "lesions.clicks_dir",
                "create it with one <case>.tsv per case, or set it to null",
            )
        )
    return problems


def check_radiomics(config: dict) -> list[Problem]:
    from ctsam.radiomics.params import SHIPPED_PARAMS

    params = str(config["radiomics"]["params"])
    if params in SHIPPED_PARAMS:
        return []
    why = _readable(Path(params))
    if why is None and Path(params).is_dir():
        why = "is a folder"
    if why:
        return [
            Problem(
                f"radiomics parameter file {params} {why}",
                "radiomics.params",
                f"set it to a pyradiomics YAML file or one of {', '.join(sorted(SHIPPED_PARAMS))}",
            )
        ]
    return []


# ---------------------------------------------------------------------------------------------- all
def preflight(
    config: dict, samples: Sequence[Any], stages: Sequence[str], *, demo: bool, use_conda: bool = False
) -> PreflightResult:
    """Every check above for a run of ``stages`` over ``samples`` (``demo``: the workflow writes the inputs)."""
    result = PreflightResult()
    configured = config["coarse"]["backend"]
    result.backends = {s.case_id: case_backend(configured, s.coarse_labels) for s in samples}
    if not demo:
        result.per_case.extend(check_inputs(samples, result.backends, config["workflow"]))
    used = set(result.backends.values()) if "coarse" in stages else set()
    if "totalsegmentator" in used:
        result.blocking.extend(
            check_totalsegmentator(
                config, _cases_of(result.backends, "totalsegmentator"), check_executable=not use_conda
            )
        )
    if not use_conda:  # conda environments bring their own packages
        result.blocking.extend(check_job_python())
        result.blocking.extend(check_packages(stages, used))
    if "refine" in stages:
        result.blocking.extend(check_refine(config, demo=demo))
    if "lesions" in stages:
        result.blocking.extend(check_lesions(config, demo=demo))
    if "radiomics" in stages:
        result.blocking.extend(check_radiomics(config))
    return result


def is_dry_run(argv: Sequence[str]) -> bool:
    """Whether a Snakemake command line asks for a dry run (``-n``, ``--dry-run``, ``-np`` ...)."""
    for arg in argv[1:]:
        if arg in ("--dry-run", "--dryrun", "--just-print"):
            return True
        if arg.startswith("-") and not arg.startswith("--") and len(arg) <= 4 and arg[1:].isalpha() and "n" in arg:
            return True
    return False


def uses_conda(argv: Sequence[str]) -> bool:
    text = " ".join(argv)
    return (
        "--use-conda" in text
        or ("--software-deployment-method" in text and "conda" in text)
        or ("--sdm" in text and "conda" in text)
    )
