"""pyradiomics parameter files: load, validate, fingerprint.

A parameter file is pyradiomics' own YAML format (``setting``, ``imageType``, ``featureClass``;
see https://pyradiomics.readthedocs.io/en/latest/customization.html). ctsam ships two:

* ``radiomics_params.yaml`` (name ``default``): the full feature set at 2 mm isotropic;
* ``radiomics_totalseg.yaml`` (name ``totalseg``): TotalSegmentator's ``--radiomics`` settings.

``--params`` takes either a shipped name or a path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctsam.errors import ConfigError
from ctsam.resources import resource_path

log = logging.getLogger(__name__)

SHIPPED_PARAMS = {"default": "radiomics_params.yaml", "totalseg": "radiomics_totalseg.yaml"}

#: Settings ctsam controls per structure; values in a parameter file are ignored (with a warning).
_CONTROLLED = ("label", "label_channel")


@dataclass(frozen=True)
class RadiomicsParams:
    """A validated pyradiomics parameter file.

    Attributes:
        path: the file read.
        sha256: digest of its bytes (recorded in every output).
        params: the parsed YAML mapping, as pyradiomics receives it.
        settings: pyradiomics' effective settings (its defaults updated by the file's ``setting``).
        image_types: enabled image types, e.g. ``{"Original": {}}``.
        feature_classes: enabled feature classes, e.g. ``{"shape": [], "firstorder": []}``.
    """

    path: Path
    sha256: str
    params: dict = field(repr=False)
    settings: dict = field(repr=False)
    image_types: dict = field(repr=False)
    feature_classes: dict = field(repr=False)

    @property
    def resampled_spacing_xyz_mm(self) -> list[float] | None:
        """Target spacing if pyradiomics would resample (needs an interpolator too), else None."""
        if self.settings.get("interpolator") is None:
            return None
        rs = self.settings.get("resampledPixelSpacing")
        return None if rs is None else list(rs)


def resolve_params_path(name_or_path: str | os.PathLike[str] | None) -> Path:
    """A shipped name (``default``, ``totalseg``), a path, or None (``default``) -> existing file."""
    if name_or_path is None:
        name_or_path = "default"
    if str(name_or_path) in SHIPPED_PARAMS:
        return resource_path(SHIPPED_PARAMS[str(name_or_path)])
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            "radiomics parameter file not found",
            path=path,
            expected=f"a pyradiomics YAML parameter file or one of {sorted(SHIPPED_PARAMS)}",
            found="no such file",
            fix="pass --params default|totalseg|PATH (see ctsam/resources/radiomics_params.yaml)",
        )
    return path


def load_params(name_or_path: str | os.PathLike[str] | None = None) -> RadiomicsParams:
    """Read and validate a parameter file with pyradiomics' own schema.

    Raises :class:`ConfigError` naming the file if it is not valid YAML or pyradiomics rejects it.
    """
    import yaml

    from ctsam.provenance import sha256_file

    path = resolve_params_path(name_or_path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError("radiomics parameter file is not valid YAML", path=path, found=str(err)) from err
    if not isinstance(params, dict):
        raise ConfigError("radiomics parameter file must hold a mapping", path=path, found=type(params).__name__)
    extractor = build_extractor(params, source=path)
    for key in _CONTROLLED:
        if key in (params.get("setting") or {}):
            log.warning("%s: setting '%s' is ignored: ctsam extracts every structure as a binary mask", path, key)
    return RadiomicsParams(
        path=path,
        sha256=sha256_file(path),
        params=params,
        settings=dict(extractor.settings),
        image_types=dict(extractor.enabledImagetypes),
        feature_classes=dict(extractor.enabledFeatures),
    )


def build_extractor(params: dict, *, source: Any = None, overrides: dict | None = None):
    """A ``RadiomicsFeatureExtractor`` for ``params`` (a parsed parameter file) with ``overrides`` applied."""
    from radiomics import featureextractor

    tame_pyradiomics_logging()

    try:
        extractor = featureextractor.RadiomicsFeatureExtractor(params)
    except Exception as err:  # pykwalify SchemaError and friends
        raise ConfigError(
            "pyradiomics rejected the radiomics parameter file",
            path=source,
            found=f"{type(err).__name__}: {err}".strip()[:2000],
            fix="fix the file (keys and types: https://pyradiomics.readthedocs.io/en/latest/customization.html)",
        ) from err
    if overrides:
        extractor.settings.update(overrides)
    return extractor


def tame_pyradiomics_logging() -> None:
    """pyradiomics sets its logger to INFO and adds its own stderr handler on import: tame both.

    Its logger goes to WARNING. Where the process has configured logging (root handlers, e.g. ctsam's
    CLI), pyradiomics' own handler is muted so messages print once, through those handlers; in a bare
    worker process its handler keeps printing warnings to stderr (the rule's log). The handler stays
    attached either way: pyradiomics' parameter validation expects it.
    """
    import radiomics

    logger = logging.getLogger("radiomics")
    logger.setLevel(logging.WARNING)
    handler = getattr(radiomics, "handler", None)
    if handler is not None:
        handler.setLevel(logging.CRITICAL + 1 if logging.getLogger().handlers else logging.WARNING)
    if not any(isinstance(f, _DropRedundancyNotes) for f in logging.getLogger("radiomics.glcm").filters):
        logging.getLogger("radiomics.glcm").addFilter(_DropRedundancyNotes())
    if logging.getLogger("pykwalify").level == logging.NOTSET:
        logging.getLogger("pykwalify").setLevel(logging.WARNING)


class _DropRedundancyNotes(logging.Filter):
    """Drop pyradiomics' per-structure note that glcm SumAverage = 2 * JointAverage (it is a fact, not a problem)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("GLCM is symmetrical")
