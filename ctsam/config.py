"""Configuration: one YAML file, validated against ``resources/config.schema.yaml``.

The schema holds every default; :func:`load_config` fills them in, so code reads
``config["convert"]["tilt"]`` without fallbacks of its own.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ctsam.errors import ConfigError
from ctsam.resources import resource_path


def load_schema() -> dict:
    import yaml

    return yaml.safe_load(resource_path("config.schema.yaml").read_text(encoding="utf-8"))


def fill_defaults(instance: Any, schema: dict) -> Any:
    """Recursively fill ``default`` values from ``schema`` into ``instance`` (a copy)."""
    if not isinstance(schema, dict):
        return instance
    if instance is None and "default" in schema:
        instance = copy.deepcopy(schema["default"])
    if isinstance(instance, dict) and "properties" in schema:
        out = dict(instance)
        for key, sub in schema["properties"].items():
            if key not in out and isinstance(sub, dict) and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = fill_defaults(out[key], sub)
        return out
    return instance


def validate_config(config: dict, *, source: str = "config") -> dict:
    """Validate and fill defaults; raise :class:`ConfigError` naming the bad key."""
    import jsonschema

    schema = load_schema()
    filled = fill_defaults(config or {}, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(
            f"invalid configuration value at '{key}'",
            path=source,
            expected=str(err.schema.get("description") or err.validator + " " + repr(err.validator_value)),
            found=f"{err.instance!r} ({err.message})",
            fix=f"fix '{key}' in {source} (see the comments in config.yaml)",
        )
    return filled


def load_config(path: str | os.PathLike[str] | None = None) -> dict:
    """Read a YAML config (or nothing) and return it validated with defaults filled in."""
    import yaml

    if path is None:
        return validate_config({}, source="built-in defaults")
    path = Path(path)
    if not path.exists():
        raise ConfigError("config file not found", path=path, fix="pass an existing YAML file with --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError("config file is not valid YAML", path=path, found=str(err), fix="fix the YAML syntax") from err
    if not isinstance(data, dict):
        raise ConfigError("config file must hold a mapping", path=path, found=type(data).__name__)
    return validate_config(data, source=str(path))
