"""SLURM preflight: before the first ``sbatch`` (and in ``snakemake -n``), in seconds.

Without it, the SLURM executor plugin on a machine without SLURM waits for job states that never
come, and a placeholder partition is only refused by ``sbatch`` after the DAG is built. Checked:

* ``sbatch``, ``sinfo`` (and ``squeue``/``scancel``, which the plugin polls and cancels with) on PATH;
* no placeholder left in ``slurm_partition`` / ``slurm_account`` (``CHANGE_ME``, ``<...>``, ``your_...``);
* every partition named exists, when ``sinfo`` answers (10 s limit);
* GPU requests are well formed (``gres: gpu:N`` / ``gpu:TYPE:N``, ``gpu``/``gpus`` whole numbers) and, when
  ``sinfo`` answers, their partition offers GPUs.

The profile's values arrive as Snakemake parsed them (``workflow.resource_settings``): raw strings
per resource, ``default`` for every rule and ``per_rule`` from ``set-resources``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ctsam.errors import ConfigError

PLACEHOLDER = re.compile(r"change[_-]?me|^<.*>$|^your[_-]|^my[_-]|^x+$|^todo$", re.IGNORECASE)
GRES = re.compile(r"^gpu(:[A-Za-z0-9_.-]+)?:[1-9][0-9]*$|^gpu$")
REQUIRED_COMMANDS = ("sbatch", "sinfo", "squeue", "scancel")
SINFO_TIMEOUT_S = 10


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text or None


def resources_from_settings(resource_settings: object) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(default, per_rule) raw resource strings from Snakemake's ``workflow.resource_settings``."""

    def raw(mapping: object) -> dict[str, str]:
        out = {}
        for key, res in dict(mapping or {}).items():  # type: ignore[call-overload]
            value = _clean(getattr(res, "raw", res))
            if value is not None:
                out[str(key)] = value
        return out

    default = raw(getattr(resource_settings, "default_resources", None))
    per_rule = {str(r): raw(m) for r, m in dict(getattr(resource_settings, "overwrite_resources", {}) or {}).items()}
    return default, per_rule


def _profile_dirs(argv: Sequence[str], env: Mapping[str, str]) -> list[Path]:
    names = []
    for i, arg in enumerate(argv):
        for opt in ("--profile", "--workflow-profile"):
            if arg == opt and i + 1 < len(argv):
                names.append(argv[i + 1])
            elif arg.startswith(opt + "="):
                names.append(arg.split("=", 1)[1])
    if not names and env.get("SNAKEMAKE_PROFILE"):
        names.append(env["SNAKEMAKE_PROFILE"])
    dirs = []
    for name in names:
        for base in (Path(name), Path.home() / ".config" / "snakemake" / name, Path("/etc/xdg/snakemake") / name):
            if (base / "config.yaml").is_file():
                dirs.append(base)
                break
    return dirs


def intended_executor(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    """The executor a Snakemake command line asks for: ``--executor``/``-e``, else its profile's ``executor``."""
    import yaml

    env = os.environ if env is None else env
    for i, arg in enumerate(argv):
        if arg in ("--executor", "-e") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--executor="):
            return arg.split("=", 1)[1]
    for folder in _profile_dirs(argv, env):
        try:
            data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("executor"):
            return str(data["executor"])
    return None


def _sinfo(args: list[str], run: Callable[..., subprocess.CompletedProcess]) -> str | None:
    try:
        proc = run(["sinfo", *args], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def slurm_problems(
    default: Mapping[str, str],
    per_rule: Mapping[str, Mapping[str, str]],
    *,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> list[str]:
    """Every problem that would make SLURM submission fail or hang, one line each (empty: ready)."""
    problems: list[str] = []
    missing = [c for c in REQUIRED_COMMANDS if which(c) is None]
    if missing:
        problems.append(
            f"{', '.join(missing)} not found on PATH: this machine is not a SLURM submit host. Fix: run on the "
            "cluster's login node (with SLURM's commands on PATH), or run locally: --profile workflow/profiles/local"
        )
    scopes: dict[str, Mapping[str, str]] = {"default-resources": default}
    scopes.update({f"set-resources: {rule}": res for rule, res in per_rule.items()})
    partitions: dict[str, list[str]] = {}
    for scope, res in scopes.items():
        for key in ("slurm_partition", "slurm_account"):
            value = _clean(res.get(key))
            if value and any(PLACEHOLDER.search(v.strip()) for v in value.split(",")):
                problems.append(
                    f"{scope} {key}: '{value}' is a placeholder. Fix: set your cluster's "
                    f"{'partition (sinfo -s lists them)' if key == 'slurm_partition' else 'account (sacctmgr show assoc user=$USER)'}"
                    " in workflow/profiles/slurm/config.yaml or with --default-resources/--set-resources"
                )
        for key in ("gres",):
            value = _clean(res.get(key))
            if value and not all(GRES.match(v.strip()) for v in value.split(",") if "gpu" in v):
                problems.append(f"{scope} gres: '{value}' is not a valid GPU request. Fix: 'gpu:1' or 'gpu:TYPE:1'")
        for key in ("gpu", "gpus"):
            value = _clean(res.get(key))
            if value is not None and not value.isdigit():
                problems.append(f"{scope} {key}: '{value}' is not a GPU count. Fix: a whole number (0: none)")
    # partition of each rule (own, else default) and whether it asks for a GPU
    rules = {"(every rule)": dict(default), **{r: {**default, **res} for r, res in per_rule.items()}}
    gpu_partitions: dict[str, list[str]] = {}
    for rule, res in rules.items():
        part = _clean(res.get("slurm_partition"))
        if not part or PLACEHOLDER.search(part):
            continue
        for p in part.split(","):
            partitions.setdefault(p.strip(), []).append(rule)
            wants_gpu = "gpu" in (_clean(res.get("gres")) or "") or any(
                (_clean(res.get(k)) or "0").isdigit() and int(_clean(res.get(k)) or "0") > 0 for k in ("gpu", "gpus")
            )
            if wants_gpu:
                gpu_partitions.setdefault(p.strip(), []).append(rule)
    if partitions and not missing:
        listing = _sinfo(["-h", "-o", "%R|%G"], run)
        if listing is not None:
            known: dict[str, set[str]] = {}
            for line in listing.splitlines():
                name, _, gres = line.strip().partition("|")
                if name:
                    known.setdefault(name.rstrip("*"), set()).add(gres)
            for part, users in sorted(partitions.items()):
                if part not in known:
                    problems.append(
                        f"partition '{part}' (used by {', '.join(sorted(set(users)))}) does not exist; "
                        f"sinfo lists {', '.join(sorted(known)) or 'none'}. Fix: use one of those"
                    )
                elif part in gpu_partitions and not any("gpu" in g for g in known[part]):
                    problems.append(
                        f"partition '{part}' has no GPUs (sinfo %G: {', '.join(sorted(known[part]))}) but "
                        f"{', '.join(sorted(set(gpu_partitions[part])))} asks for one. Fix: set "
                        "set-resources: <rule>: slurm_partition to a GPU partition"
                    )
    return problems


def check_slurm(default: Mapping[str, str], per_rule: Mapping[str, Mapping[str, str]], **kwargs: object) -> None:
    """Raise :class:`ConfigError` listing every SLURM problem (a few lines), or return."""
    problems = slurm_problems(default, per_rule, **kwargs)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(
            f"SLURM preflight: {len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was submitted",
            found="\n    " + "\n    ".join(problems),
            fix="fix the items above (workflow/profiles/slurm/config.yaml; docs/slurm.md)",
        )
