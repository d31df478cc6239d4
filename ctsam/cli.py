"""The ``ctsam`` command line.

Each sub-command lives in ``ctsam/commands/<name>.py`` and defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int | None``. Command modules import nothing heavy at
module level, so ``ctsam --help`` is instant. This is the only module that configures logging and
maps errors to exit codes: 0 ok, 2 input or config error, 3 external tool failure, 4 the machine
refused a file operation (disk full, read-only, permission denied, missing folder), 1 unexpected,
130/143 interrupted/terminated.

Privacy: log lines pass through :class:`_RedactFilter`, which replaces the command's input paths
(study folders and image files are often named after patients) by ``<input>`` and DICOM UIDs by
``<uid>`` (unless ``privacy.keep_uids`` is set in the config).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import time
from pathlib import Path

from ctsam import __version__
from ctsam.stages import stage_commands

# (sub-command, module under ctsam.commands): the stages' commands come from the stage record
# (ctsam/stages.py); add other commands here, one line each.
COMMANDS: list[tuple[str, str]] = [
    *stage_commands(),
    # cohort level
    ("cohort-status", "cohort"),
    # models, weights
    ("weights", "weights"),
    ("model", "model"),
    # training and evaluation
    ("train", "train"),
    ("train-demo", "train_demo"),
    ("evaluate", "evaluate"),
]

log = logging.getLogger("ctsam")


class _CaseFilter(logging.Filter):
    def __init__(self, case: str | None) -> None:
        super().__init__()
        self.case = case or "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.case = self.case
        return True


# a DICOM UID: digits in at least 5 dot-separated components (e.g. 1.2.840.113619.2.55...)
_UID = re.compile(r"(?<![\w.])[0-2](?:\.\d+){4,}(?![\w.])")
# argparse destinations that hold input paths (study folders, image files, user label maps)
INPUT_ARGS = ("study_dir", "image", "labels", "inputs", "extra_clicks")


class _RedactFilter(logging.Filter):
    """Replace input paths by ``<input>`` and DICOM UIDs by ``<uid>`` in every log record."""

    def __init__(self, secrets: list[str], *, uids: bool = True) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) > 1}, key=len, reverse=True)
        self.uids = uids

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "<input>")
        return _UID.sub("<uid>", text) if self.uids else text

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = self.redact(msg)
        if record.exc_info:
            import traceback

            clean += "\n" + self.redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = clean, None
        return True


def input_secrets(args: argparse.Namespace) -> list[str]:
    """The input paths of ``args`` in every spelling a log line may use (as given, absolute, resolved)."""
    out: list[str] = []
    for dest in INPUT_ARGS:
        value = getattr(args, dest, None)
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, str) or not v or v.startswith("builtin:"):
                continue
            p = Path(v)
            out += [v, str(p), os.path.abspath(v)]
            try:
                out.append(str(p.resolve()))
            except OSError:
                pass
    return out


def configure_logging(verbosity: int, case: str | None, *, redact: list[str] | None = None, uids: bool = True) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(case)s] %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_CaseFilter(case))
    handler.addFilter(_RedactFilter(redact or [], uids=uids))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party chatter stays at WARNING unless -v
    for noisy in ("matplotlib", "PIL", "urllib3", "numexpr", "radiomics", "pykwalify"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)


def common_options(*, top_level: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the sub-command (``ctsam -q convert`` = ``ctsam convert -q``).

    On the sub-command their defaults are SUPPRESS, so an option given before the sub-command is
    not overwritten by the sub-command's default.
    """

    def default(value):
        return value if top_level else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="more log output (-vv: debug third-party too)"
    )
    common.add_argument("-q", "--quiet", action="store_true", default=default(False), help="warnings and errors only")
    common.add_argument(
        "--case", default=default(None), help="pseudonymous case id, used in log lines and error messages"
    )
    common.add_argument(
        "--config",
        default=default(None),
        help="YAML config (default: ./config.yaml when present, else built-in defaults)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options(top_level=False)
    parser = argparse.ArgumentParser(
        prog="ctsam",
        description="Cohort CT segmentation: DICOM -> coarse masks -> promptable refinement -> label maps, QC, radiomics.",
        parents=[common_options(top_level=True)],
    )
    parser.add_argument("--version", action="version", version=f"ctsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        module = importlib.import_module(f"ctsam.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[common])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    from ctsam.config import default_config_path
    from ctsam.errors import CtsamError, environment_fault, is_environment_error
    from ctsam.io.atomic import Terminated, install_sigterm_cleanup, remove_stale_temps, temp_target

    found = default_config_path() if getattr(args, "config", None) is None else None
    if found is not None:
        args.config = str(found)
    # one logging set-up, after the config is known: input paths and (unless privacy.keep_uids) UIDs redacted
    configure_logging(
        -1 if args.quiet else args.verbose, args.case, redact=input_secrets(args), uids=not _keep_uids(args)
    )
    if found is not None:
        log.debug("reading %s (pass --config to use another file)", found)
    install_sigterm_cleanup()
    output = getattr(args, "output", None)
    if isinstance(output, str) and output:
        # temp files a killed earlier run of this case left beside its outputs
        for p in remove_stale_temps(Path(output).parent):
            log.info("removed a temporary file left by an interrupted run: %s", p.name)

    t0 = time.perf_counter()
    try:
        rc = args._run(args)
    except CtsamError as err:
        if err.case is None and args.case:
            err.case = args.case
            err.args = (err._render(),)
        log.error("%s", err)
        return err.exit_code
    except OSError as err:
        if not is_environment_error(err):
            log.exception("unexpected error in 'ctsam %s' (please report it with this traceback)", args.command)
            return 1
        target = temp_target(err.filename) if err.filename else None
        fault = environment_fault(
            err,
            target or err.filename or output,
            case=args.case,
            action="write" if target or err.filename is None else "access",
        )
        log.error("%s", fault)
        return fault.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Terminated:
        log.error("terminated (SIGTERM): temporary files removed, no output written")
        return 143
    except Exception:  # noqa: BLE001 - the one place that turns surprises into exit code 1
        log.exception("unexpected error in 'ctsam %s' (please report it with this traceback)", args.command)
        return 1
    log.debug("'ctsam %s' finished in %.2f s", args.command, time.perf_counter() - t0)
    return int(rc or 0)


def _keep_uids(args: argparse.Namespace) -> bool:
    """``privacy.keep_uids`` of the command's config (False when unset or unreadable)."""
    if not getattr(args, "config", None):
        return False
    from ctsam.config import load_config
    from ctsam.errors import CtsamError

    try:
        return bool(load_config(args.config).get("privacy", {}).get("keep_uids", False))
    except CtsamError:  # the command itself reports a bad config
        return False


if __name__ == "__main__":
    raise SystemExit(main())
