"""Running the TotalSegmentator CLI as a subprocess, one case per call, in a job-local sandbox.

Never in-process: nnU-Net starts spawned worker pools and TotalSegmentator sets process-wide
environment variables and torch thread settings (totalsegmentator.md sections 2, 11).

Per call, ctsam creates a job folder holding:

* ``home/config.json``: a pre-seeded ``TOTALSEG_HOME_DIR`` (usage statistics off, disclaimer
  shown), so parallel jobs never race on a shared config file and firewalled nodes never wait on
  the statistics POST;
* ``tmp/``: ``TMPDIR`` for nnU-Net's temporary folders and torch caches;
* ``totalsegmentator.log``: its stdout and stderr;
* ``seg.nii.gz`` and ``report.json``: its multilabel output and ``--report`` manifest.

Weights come from the user's ``TOTALSEG_WEIGHTS_PATH`` (or the configured path), which is
checked with :mod:`ctsam.coarse.weights` before anything starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ctsam.coarse.weights import MODES, check_weights, default_weights_root
from ctsam.errors import ConfigError, ExternalToolError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Pre-seeded TotalSegmentator config.json: no usage statistics, no disclaimer, fixed id.
SEEDED_CONFIG = {
    "totalseg_id": "totalseg_ctsam000",
    "send_usage_stats": False,
    "prediction_counter": 0,
    "statistics_disclaimer_shown": True,
}

_LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class TsOptions:
    """How to call TotalSegmentator (task ``total``).

    Attributes:
        mode: ``full`` (1.5 mm, five part models), ``fast`` (3 mm) or ``fastest`` (6 mm).
        device: ``gpu``, ``gpu:N``, ``cpu`` or ``mps``.
        roi_subset: class names to predict only (adds the 6 mm crop locator, 298).
        robust_crop: use the 3 mm locator (297) for ``roi_subset``.
        threads_resampling: ``--nr_thr_resamp`` (also nnU-Net preprocessing workers).
        threads_saving: ``--nr_thr_saving`` (spawned export pool; 1 saves ~13 s per call).
        nnunet_threads: ``nnUNet_def_n_proc`` for the logits -> segmentation step, or None.
        executable: the ``TotalSegmentator`` program (name on PATH or a path).
        weights_path: weights root; None = ``$TOTALSEG_WEIGHTS_PATH`` or TotalSegmentator's default.
        timeout_s: kill TotalSegmentator after this many seconds (None = no limit).
    """

    mode: str = "full"
    device: str = "gpu"
    roi_subset: tuple[str, ...] = ()
    robust_crop: bool = False
    threads_resampling: int = 1
    threads_saving: int = 1
    nnunet_threads: int | None = None
    executable: str = "TotalSegmentator"
    weights_path: str | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                "unknown TotalSegmentator mode",
                expected=" | ".join(MODES),
                found=repr(self.mode),
                fix="set coarse.totalsegmentator.mode or pass --mode",
            )
        dev = self.device
        if not (dev in ("gpu", "cpu", "mps") or (dev.startswith("gpu:") and dev[4:].isdigit())):
            raise ConfigError(
                "unknown TotalSegmentator device",
                expected="gpu, gpu:N, cpu or mps",
                found=repr(dev),
                fix="set coarse.totalsegmentator.device or pass --device",
            )
        if self.roi_subset:
            from ctsam import labels

            bad = [n for n in self.roi_subset if n not in labels.ts_total_labels().values()]
            if bad:
                raise ConfigError(
                    "roi_subset names are not TotalSegmentator 'total' classes",
                    expected="names such as kidney_left, liver (ctsam/resources/labels/ts_total.tsv)",
                    found=", ".join(bad),
                    fix="fix coarse.totalsegmentator.roi_subset / --roi-subset",
                )
        for key in ("threads_resampling", "threads_saving"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key} must be at least 1", found=str(getattr(self, key)))

    @classmethod
    def from_config(cls, section: dict) -> TsOptions:
        """From the ``coarse.totalsegmentator`` config section (defaults already filled)."""
        return cls(
            mode=section.get("mode", "full"),
            device=section.get("device", "gpu"),
            roi_subset=tuple(section.get("roi_subset") or ()),
            robust_crop=bool(section.get("robust_crop", False)),
            threads_resampling=int(section.get("threads_resampling", 1)),
            threads_saving=int(section.get("threads_saving", 1)),
            nnunet_threads=section.get("nnunet_threads"),
            executable=section.get("executable", "TotalSegmentator"),
            weights_path=section.get("weights_path"),
            timeout_s=section.get("timeout_s"),
        )

    def weights_root(self, env: dict[str, str] | None = None) -> Path:
        return Path(self.weights_path).expanduser() if self.weights_path else default_weights_root(env)


@dataclass(frozen=True)
class TsRun:
    """What one TotalSegmentator call produced."""

    seg_path: Path
    report: dict | None
    command: list[str]
    returncode: int
    runtime_s: float
    log_path: Path
    device_fallback: bool
    warnings: list[str] = field(default_factory=list)


def resolve_executable(name: str) -> str:
    """Find the TotalSegmentator program: a path, a name on PATH, or beside this Python."""
    if os.sep in name:
        if Path(name).is_file():
            return str(Path(name))
    else:
        found = shutil.which(name)
        if found:
            return found
        beside = Path(sys.executable).parent / name
        if beside.is_file():
            return str(beside)
    raise ExternalToolError(
        "the TotalSegmentator program was not found",
        expected=f"an executable {name!r} on PATH or beside {sys.executable}",
        found="nothing",
        fix=(
            "install it (pip install -c .ci/constraints.txt totalsegmentator==2.18.0, or the conda env "
            "envs/totalsegmentator.yaml) or set coarse.totalsegmentator.executable"
        ),
    )


def build_command(executable: str, ct_path: Path, seg_path: Path, report_path: Path, opts: TsOptions) -> list[str]:
    """The TotalSegmentator argument list (multilabel output, report, no stdout chatter)."""
    cmd = [executable, "-i", str(ct_path), "-o", str(seg_path), "-ml", "-ta", "total", "-d", opts.device]
    if opts.mode == "fast":
        cmd.append("-f")
    elif opts.mode == "fastest":
        cmd.append("-ff")
    if opts.roi_subset:
        cmd += ["-rs", *opts.roi_subset]
    if opts.robust_crop:
        cmd.append("-rc")
    cmd += ["-nr", str(opts.threads_resampling), "-ns", str(opts.threads_saving), "--report", str(report_path), "-q"]
    return cmd


def prepare_job_dir(job_dir: Path) -> dict[str, Path]:
    """Create the sandbox (``home/config.json``, ``tmp/``) and return its paths."""
    home = job_dir / "home"
    tmp = job_dir / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    (home / "config.json").write_text(json.dumps(SEEDED_CONFIG, indent=4) + "\n", encoding="utf-8")
    return {"home": home, "tmp": tmp, "log": job_dir / "totalsegmentator.log"}


def build_env(paths: dict[str, Path], opts: TsOptions, weights_root: Path, base: dict[str, str] | None = None) -> dict:
    """Environment for the subprocess: the caller's, plus the sandbox and the weights root."""
    env = dict(os.environ if base is None else base)
    env["TOTALSEG_HOME_DIR"] = str(paths["home"])
    env["TOTALSEG_WEIGHTS_PATH"] = str(weights_root)
    env["TMPDIR"] = str(paths["tmp"])
    if opts.nnunet_threads:
        env["nnUNet_def_n_proc"] = str(int(opts.nnunet_threads))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tail(path: Path, n: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            # progress bars rewrite one line with \r; keep their last state only
            lines = deque((line.rstrip("\n").split("\r")[-1] for line in fh), maxlen=n)
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(lines)


def preflight(opts: TsOptions, *, case: str | None = None, env: dict[str, str] | None = None) -> Path:
    """Check weights (and the executable) before any work; returns the weights root.

    Raises :class:`ctsam.errors.InputDataError` (exit 2) naming every missing or truncated file.
    """
    root = opts.weights_root(env)
    report = check_weights(opts.mode, roi_subset=bool(opts.roi_subset), robust_crop=opts.robust_crop, root=root)
    if not report.ok:
        raise report.error(case=case)
    log.debug("weights ok: %d files under %s", len(report.required), root)
    return root


def run_totalsegmentator(
    ct_path: str | os.PathLike[str],
    job_dir: str | os.PathLike[str],
    opts: TsOptions,
    *,
    case: str | None = None,
    weights_root: Path | None = None,
    while_running: Callable[[], T] | None = None,
) -> tuple[TsRun, T | None]:
    """Run TotalSegmentator on one NIfTI CT in ``job_dir``; return where its output lies.

    ``while_running`` (optional) is called once the subprocess has started, so the caller's own
    preparation overlaps with TotalSegmentator's start-up; its result is returned alongside. If it
    raises, TotalSegmentator is stopped and the error propagates.

    Raises :class:`ExternalToolError` (exit 3) with the log tail when it fails or writes nothing.
    """
    ct_path = Path(ct_path).resolve()
    job_dir = Path(job_dir).resolve()
    root = weights_root if weights_root is not None else preflight(opts, case=case)
    executable = resolve_executable(opts.executable)
    paths = prepare_job_dir(job_dir)
    seg_path = job_dir / "seg.nii.gz"
    report_path = job_dir / "report.json"
    for stale in (seg_path, report_path):
        stale.unlink(missing_ok=True)
    cmd = build_command(executable, ct_path, seg_path, report_path, opts)
    env = build_env(paths, opts, root)
    log.info("running TotalSegmentator (%s, device %s) on %s", opts.mode, opts.device, ct_path.name)
    log.debug("command: %s", " ".join(cmd))
    t0 = time.perf_counter()
    with open(paths["log"], "wb") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=job_dir,
            start_new_session=True,
        )
        try:
            side_result = while_running() if while_running is not None else None
            remaining = None if opts.timeout_s is None else max(0.0, opts.timeout_s - (time.perf_counter() - t0))
            returncode = proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise ExternalToolError(
                f"TotalSegmentator did not finish within {opts.timeout_s:.0f} s and was stopped",
                case=case,
                path=ct_path,
                found="last log lines:\n" + _tail(paths["log"]),
                fix="raise coarse.totalsegmentator.timeout_s, use --mode fast or a GPU node; full log: "
                + str(paths["log"]),
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    runtime_s = time.perf_counter() - t0
    if returncode != 0 or not seg_path.exists():
        what = (
            f"TotalSegmentator failed with exit code {returncode}"
            if returncode != 0
            else "TotalSegmentator exited 0 but wrote no output"
        )
        raise ExternalToolError(
            what,
            case=case,
            path=ct_path,
            expected=f"a multilabel NIfTI at {seg_path}",
            found="last log lines:\n" + _tail(paths["log"]),
            fix=f"read the full log {paths['log']} (the job folder is kept after a failure); "
            "check the weights with 'ctsam weights check'",
        )
    report = None
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("TotalSegmentator --report JSON is unreadable; versions taken from this environment")
    warnings = []
    text = paths["log"].read_text(encoding="utf-8", errors="replace")
    fallback = opts.device.startswith("gpu") and (
        "No GPU detected" in text or (report is not None and report.get("device") == "cpu")
    )
    if fallback:
        msg = f"device {opts.device} was requested but TotalSegmentator ran on the CPU (no CUDA device visible)"
        log.warning("%s", msg)
        warnings.append(msg)
    log.info("TotalSegmentator finished in %.2f s", runtime_s)
    return TsRun(seg_path, report, cmd, returncode, runtime_s, paths["log"], fallback, warnings), side_result


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the TotalSegmentator process we started, and its worker pool (its own session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def provenance_from_report(report: dict | None) -> dict:
    """Versions and run settings from the ``--report`` manifest (falls back to this environment)."""
    if report is not None and report.get("totalsegmentator_version"):
        return {
            "source": "TotalSegmentator --report",
            "totalsegmentator_version": report.get("totalsegmentator_version"),
            "nnunetv2_version": report.get("nnunetv2_version"),
            "torch_version": report.get("torch_version"),
            "task": report.get("task"),
            "device": report.get("device"),
            "fast": report.get("fast"),
            "fastest": report.get("fastest"),
            "roi_subset": report.get("roi_subset"),
            "num_classes": report.get("num_classes"),
        }
    from ctsam.provenance import package_versions

    versions = package_versions(("TotalSegmentator", "nnunetv2", "torch"))
    return {
        "source": "installed packages of the ctsam environment (no --report from TotalSegmentator)",
        "totalsegmentator_version": versions.get("TotalSegmentator"),
        "nnunetv2_version": versions.get("nnunetv2"),
        "torch_version": versions.get("torch"),
    }
