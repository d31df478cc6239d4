"""``ctsam model``: convert published checkpoints and inspect model files (any family).

    ctsam model convert ckpt_1000/params.pth [--checkpoint-config ckpt_1000/config.py] -o ctsam3d.safetensors
    ctsam model convert kits/best.pth.tar --preset kits -o kits_tumour.safetensors
    ctsam model info MODEL [--preset P]

The file is recognised by its content (published CT-SAM3D ``params.pth``, published 3DSAM-adapter
dict, ctsam ``.safetensors``, ``builtin:<name>``). Every key and shape is checked (a missing,
unexpected or mis-shaped entry is an error, and nothing is loaded partially); NaN/inf weights are
refused. For CT-SAM3D, ``convert`` reads the HU window / spacing from the published ``config.py``
(parsed, never executed; by default the one beside params.pth). For 3DSAM-adapter, ``--preset``
(kits, lits, msd_pancreas, msd_colon) stores the dataset's published input convention (HU window,
z-score mean/SD, 1 mm spacing, 128^3 patch) in the safetensors metadata, so later commands need no
flag. ``info`` prints family, variant, the number of state-dict values and the metadata as JSON.
The global ``--config`` option takes ctsam's YAML config; a ``--config`` ending in ``.py`` is taken as
the published CT-SAM3D checkpoint config, the same as ``--checkpoint-config``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

HELP = "convert published checkpoints (CT-SAM3D, 3DSAM-adapter) to safetensors, or show a model file's metadata"

log = logging.getLogger(__name__)

PRESET_NAMES = ("kits", "lits", "msd_pancreas", "msd_colon")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_action", metavar="ACTION", required=True)
    convert = sub.add_parser("convert", help="published checkpoint -> ctsam .safetensors + .json")
    convert.add_argument(
        "params",
        help="published CT-SAM3D params.pth or 3DSAM-adapter checkpoint (any ctsam "
        "model file also works, e.g. to store a preset)",
    )
    convert.add_argument("-o", "--output", required=True, help="output .safetensors path")
    convert.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default=None,
        help="3DSAM-adapter: the dataset's published input convention to store",
    )
    convert.add_argument(
        "--checkpoint-config",
        default=None,
        help="CT-SAM3D: published config.py (default: config.py beside params.pth when present)",
    )
    info = sub.add_parser("info", help="print family, variant, parameter count and metadata of a model file as JSON")
    info.add_argument("model", help="ctsam .safetensors, published params.pth / 3DSAM-adapter .pth, or builtin:NAME")
    info.add_argument("--preset", choices=PRESET_NAMES, default=None, help="3DSAM-adapter: preset to show")


def _checkpoint_config(args: argparse.Namespace) -> str | None:
    if getattr(args, "checkpoint_config", None):
        return args.checkpoint_config
    if args.config and str(args.config).endswith(".py"):
        return args.config
    return None


def run(args: argparse.Namespace) -> int:
    from ctsam.model import describe, load_model, save_model

    if args.model_action == "convert":
        model = load_model(args.params, preset=args.preset, config_path=_checkpoint_config(args))
        save_model(model, args.output)
        spec = model.input_spec
        log.info(
            "wrote %s (%s %s, preset %s, HU window %s, spacing %s mm) from %s sha256 %s",
            args.output,
            model.family,
            model.variant,
            spec.preset,
            spec.hu_window,
            list(spec.spacing_zyx_mm),
            args.params,
            model.sha256,
        )
        return 0
    model = load_model(args.model, preset=args.preset, config_path=_checkpoint_config(args), require_preset=False)
    info = describe(model)
    report = {**info, "meta": info.pop("metadata")}
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0
