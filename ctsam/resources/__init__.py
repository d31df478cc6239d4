"""Data files shipped with ctsam (config schema, parameter files, class tables)."""

import os
from importlib import resources
from pathlib import Path

BUILTIN_PREFIX = "builtin:"


def resource_path(name: str) -> Path:
    """Path of a file shipped in ``ctsam/resources``."""
    return Path(str(resources.files(__name__).joinpath(name)))


def resolve_model_path(spec: str | os.PathLike[str]) -> Path:
    """A model path, or ``builtin:NAME`` -> the model ``NAME.safetensors`` shipped in
    ``ctsam/resources/models/`` (e.g. ``builtin:demo_micro``). Imports no torch."""
    from ctsam.errors import CheckpointError

    text = str(spec)
    if not text.startswith(BUILTIN_PREFIX):
        return Path(spec)
    name = text[len(BUILTIN_PREFIX) :]
    folder = resource_path("models")
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
        raise CheckpointError(
            "unknown built-in model",
            path=text,
            expected=", ".join(BUILTIN_PREFIX + n for n in shipped) or "a shipped model",
            found=name,
            fix="pass a model file path, or one of the built-in names",
        )
    return path
