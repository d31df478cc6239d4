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


#: keys that moved: old dotted key -> the one key that now carries its meaning
MOVED_KEYS: dict[str, str] = {
    "workflow.coarse_backend": "coarse.backend",
}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unknown_keys(instance: Any, schema: dict, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Every key of ``instance`` the schema does not know, at any level: ``[(dotted key, valid keys)]``.

    Only mappings whose schema lists ``properties`` and forbids others (``additionalProperties: false``)
    are checked; free-form mappings (e.g. per-structure tolerances) are not.
    """
    out: list[tuple[str, list[str]]] = []
    if not isinstance(schema, dict):
        return out
    props = schema.get("properties")
    if isinstance(props, dict) and isinstance(instance, dict):
        for key, value in instance.items():
            dotted = f"{prefix}{key}"
            if key in props:
                out.extend(unknown_keys(value, props[key], dotted + "."))
            elif schema.get("additionalProperties") is False:
                out.append((dotted, sorted(props)))
    if isinstance(schema.get("items"), dict) and isinstance(instance, list):
        for i, item in enumerate(instance):
            out.extend(unknown_keys(item, schema["items"], f"{prefix.rstrip('.')}[{i}]."))
    return out


def _unknown_key_error(found: list[tuple[str, list[str]]], source: str) -> ConfigError:
    import difflib

    lines = []
    for dotted, valid in found[:8]:
        parent, _, key = dotted.rpartition(".")
        if dotted in MOVED_KEYS:
            hint = f"this key moved: use '{MOVED_KEYS[dotted]}'"
        else:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            if close:
                hint = f"did you mean '{(parent + '.') if parent else ''}{close[0]}'?"
            else:
                shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
                hint = f"valid keys{' in ' + parent if parent else ''}: {shown}"
        lines.append(f"'{dotted}': {hint}")
    if len(found) > 8:
        lines.append(f"... and {len(found) - 8} more")
    what = f"unknown configuration key{'s' if len(found) > 1 else ''}: " + ", ".join(f"'{d}'" for d, _ in found[:8])
    return ConfigError(
        what,
        path=source,
        found=lines[0] if len(lines) == 1 else "\n    " + "\n    ".join(lines),
        fix=f"rename or remove {'them' if len(found) > 1 else 'it'} in {source} (every key: config.yaml, docs/config.md)",
    )


def _bound_pairs(section: dict, prefix: str) -> list[tuple[str, Any, str, Any]]:
    """(low key, low, high key, high) for min_X/max_X, X_min/X_max keys and [low, high] bounds lists."""
    pairs = []
    for key, value in section.items():
        for lo_pat, hi_pat in (("min_", "max_"), ("_min", "_max")):
            if lo_pat.startswith("_") and key.endswith(lo_pat):
                other = key[: -len(lo_pat)] + hi_pat
            elif not lo_pat.startswith("_") and key.startswith(lo_pat):
                other = hi_pat + key[len(lo_pat) :]
            else:
                continue
            if other in section:
                pairs.append((prefix + key, value, prefix + other, section[other]))
        if (key.endswith("_bounds") or key == "mean_hu") and isinstance(value, list) and len(value) == 2:
            pairs.append((f"{prefix}{key}[0]", value[0], f"{prefix}{key}[1]", value[1]))
    return pairs


def cross_field_problems(config: dict) -> list[str]:
    """Checks the schema cannot express: every lower bound is at most its upper bound, at any level."""
    problems: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for lo_key, lo, hi_key, hi in _bound_pairs(node, prefix):
                numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi))
                if numeric and lo > hi:
                    problems.append(f"'{lo_key}' ({lo}) is larger than '{hi_key}' ({hi})")
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{prefix.rstrip('.')}[{i}].")

    walk(config, "")
    return problems


def validate_config(config: dict, *, source: str = "config") -> dict:
    """Validate the whole config and fill defaults; raise :class:`ConfigError` naming the bad key.

    Order: unknown keys at any level (with the closest valid key), then the schema's types and
    ranges, then cross-field bounds (a minimum above its maximum). Messages are a few lines.
    """
    import jsonschema

    schema = load_schema()
    found_unknown = unknown_keys(config or {}, schema)
    if found_unknown:
        raise _unknown_key_error(found_unknown, source)
    filled = fill_defaults(config or {}, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator in ("oneOf", "anyOf"):
            detail = "not one of the allowed forms"
        else:
            detail = err.message if len(err.message) <= 120 else err.message[:117] + "..."
        expected = err.schema.get("description") if isinstance(err.schema, dict) else None
        raise ConfigError(
            f"invalid configuration value at '{key}'",
            path=source,
            expected=str(expected or f"{err.validator} {_short(err.validator_value)}")[:200],
            found=f"{_short(err.instance)} ({detail})",
            fix=f"fix '{key}' in {source} (see the comments in config.yaml, docs/config.md)",
        )
    bounds = cross_field_problems(filled)
    if bounds:
        raise ConfigError(
            "inconsistent bounds in the configuration",
            path=source,
            expected="every minimum at most its maximum",
            found="; ".join(bounds),
            fix=f"swap or correct the values in {source}",
        )
    return filled


def default_config_path(cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """``./config.yaml`` when it exists (what ``ctsam`` commands read without ``--config``), else None."""
    path = Path(cwd or ".") / "config.yaml"
    return path if path.is_file() else None


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
        raise ConfigError(
            "config file is not valid YAML", path=path, found=str(err), fix="fix the YAML syntax"
        ) from err
    if not isinstance(data, dict):
        raise ConfigError("config file must hold a mapping", path=path, found=type(data).__name__)
    return validate_config(data, source=str(path))
