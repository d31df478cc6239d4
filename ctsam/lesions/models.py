"""Which lesion model segments which click: ``--checkpoint MODEL`` and ``--checkpoint LABEL=MODEL``.

A plain ``MODEL`` is the default (clicks without a label, or with a label no model is mapped to);
``LABEL=MODEL`` maps a click label (the ``label`` column of ``CLICKS.tsv``, e.g. ``liver_tumor``) to
its own model, for cohorts with several tumour types. ``MODEL`` is anything
:func:`ctsam.model.load_model` reads: a published 3DSAM-adapter ``.pth`` (with ``--preset``), a
ctsam ``.safetensors``, or ``builtin:NAME``. Files named twice are loaded once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ctsam.errors import ConfigError
from ctsam.lesions.engine import DEFAULT_MODEL

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_checkpoint_specs(
    specs: Iterable[str], mapping: Mapping[str, str] | None = None, default: str | None = None
) -> dict[str, str]:
    """``{key: model spec}`` (key ``""`` = default) from ``--checkpoint`` values and the config.

    Command-line values win over ``mapping`` (config ``lesions.checkpoints``) and ``default``
    (config ``lesions.checkpoint``).
    """
    out: dict[str, str] = {}
    if default:
        out[DEFAULT_MODEL] = str(default)
    for label, spec in (mapping or {}).items():
        _check_label(str(label), str(spec))
        out[str(label)] = str(spec)
    cli_default = None
    for raw in specs:
        label, sep, spec = raw.partition("=")
        if sep and _LABEL.match(label) and not label.startswith("builtin"):
            _check_label(label, spec)
            out[label] = spec
        else:
            if cli_default is not None:
                raise ConfigError(
                    "two default lesion models given",
                    found=f"{cli_default!r} and {raw!r}",
                    fix="give one --checkpoint MODEL and map others with --checkpoint LABEL=MODEL",
                )
            cli_default = raw
    if cli_default is not None:
        out[DEFAULT_MODEL] = cli_default
    if not out:
        raise ConfigError(
            "no lesion model given",
            expected="--checkpoint MODEL (or config lesions.checkpoint)",
            found="none",
            fix="pass --checkpoint builtin:demo_lesion or a 3DSAM-adapter checkpoint",
        )
    return out


def _check_label(label: str, spec: str) -> None:
    if not _LABEL.match(label) or not spec:
        raise ConfigError(
            "bad lesion model mapping",
            expected="LABEL=MODEL with a label of letters, digits, '_', '.', '-'",
            found=f"{label}={spec}",
            fix="e.g. --checkpoint liver_tumor=lits.safetensors",
        )


def load_models(specs: Mapping[str, str], *, preset: str | None, device: str) -> dict[str, Any]:
    """Load every model of ``specs`` through :func:`ctsam.model.load_model` (each file once)."""
    from ctsam.model import load_model

    loaded: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key in sorted(specs):
        spec = specs[key]
        if spec not in loaded:
            model = load_model(spec, preset=preset, device=device)
            module = getattr(model, "module", None)
            if module is not None:
                module.eval()
            loaded[spec] = model
        out[key] = loaded[spec]
    return out
