"""``ctsam model``: convert the published CT-SAM3D checkpoint and inspect model files.

    ctsam model convert ckpt_1000/params.pth [--config ckpt_1000/config.py] -o ctsam3d.safetensors
    ctsam model info ctsam3d.safetensors

``convert`` maps all published state-dict keys onto ctsam's modules (strict: a missing, unexpected or
mis-shaped key is an error), reads the HU window / spacing from the published ``config.py`` (parsed,
never executed; by default the one beside params.pth), and writes safetensors plus a JSON sidecar.
The global ``--config`` option takes ctsam's YAML config; a ``--config`` ending in ``.py`` is taken as
the published checkpoint config, the same as ``--checkpoint-config``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

HELP = "convert the published CT-SAM3D checkpoint to safetensors, or show a model file's metadata"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_action", metavar="ACTION", required=True)
    convert = sub.add_parser("convert", help="published params.pth (+ config.py) -> ctsam .safetensors + .json")
    convert.add_argument("params", help="published CT-SAM3D params.pth (dict key model_state_dict)")
    convert.add_argument("-o", "--output", required=True, help="output .safetensors path")
    convert.add_argument("--checkpoint-config", default=None,
                         help="published config.py (default: config.py beside params.pth when present)")
    info = sub.add_parser("info", help="print variant, parameter count and metadata of a model file as JSON")
    info.add_argument("model", help="ctsam .safetensors or published params.pth")


def _checkpoint_config(args: argparse.Namespace) -> str | None:
    if getattr(args, "checkpoint_config", None):
        return args.checkpoint_config
    if args.config and str(args.config).endswith(".py"):
        return args.config
    return None


def run(args: argparse.Namespace) -> int:
    from ctsam.model.checkpoint import convert_checkpoint, load_ctsam3d

    if args.model_action == "convert":
        meta = convert_checkpoint(args.params, args.output, config_path=_checkpoint_config(args))
        log.info("wrote %s (%s, HU window %s, %.2f mm) from %s sha256 %s", args.output, meta.variant,
                 list(meta.hu_window), meta.spacing_mm, meta.source, meta.sha256)
        return 0
    model = load_ctsam3d(args.model, config_path=_checkpoint_config(args))
    report = {"variant": model.variant, "n_parameters": model.n_parameters(), "meta": model.meta.to_dict()}
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0
