"""Data files shipped with ctsam (config schema, parameter files, class tables)."""

from importlib import resources
from pathlib import Path


def resource_path(name: str) -> Path:
    """Path of a file shipped in ``ctsam/resources``."""
    return Path(str(resources.files(__name__).joinpath(name)))
