"""Click prompts for the refinement network, in world coordinates.

``ctsam seed`` writes a :class:`CasePrompts` (``prompts.json``); ``ctsam refine`` reads it, merges
reviewer corrections (:func:`merge_corrections`) and turns every prompt set into 64^3 patches.

Coordinates are LPS world millimetres ``(x, y, z)`` (the same frame as :class:`ctsam.volume.Geometry`),
so prompts stay valid whatever grid the network resamples to.

File formats (JSON, UTF-8, written atomically and deterministically: same prompts -> same bytes):

``prompts.json``::

    {"format": "ctsam-prompts", "format_version": 1,
     "ct_geometry": {...Geometry.to_dict()...},
     "settings": {...seed settings used...},
     "structures": {"liver": {"label": 5, "volume_ml": 1125.7, "n_components": 1,
                              "bbox_min_xyz_mm": [...], "bbox_max_xyz_mm": [...]}, ...},
     "prompt_sets": [{"structure": "liver", "component": 0, "tile": 3,
                      "center_xyz_mm": [x, y, z],
                      "clicks": [{"xyz_mm": [x, y, z], "positive": true, "source": "interior"}, ...]}, ...],
     "skipped": {"prostate": "excluded by config (seed.exclude)", ...}}

``corrections/<case>.json`` (reviewer clicks, ``ctsam refine --extra-clicks``)::

    {"format": "ctsam-corrections", "format_version": 1,
     "clicks": {"liver": [{"xyz_mm": [x, y, z], "positive": true}, ...],
                "spleen": [{"xyz_mm": [x, y, z], "positive": false}]}}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ctsam.errors import InputDataError
from ctsam.io.atomic import atomic_write_text
from ctsam.volume import Geometry

FORMAT = "ctsam-prompts"
CORRECTIONS_FORMAT = "ctsam-corrections"
FORMAT_VERSION = 1
CORRECTION_COMPONENT = -1
"""``PromptSet.component`` of the prompt set holding a structure's reviewer clicks."""

_ROUND_MM = 3  # decimals kept for world coordinates (1 um): stable JSON across platforms


def _xyz(values, what: str) -> tuple[float, float, float]:
    try:
        v = tuple(float(x) for x in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be 3 numbers, got {values!r}") from err
    if len(v) != 3 or not all(math.isfinite(x) for x in v):
        raise ValueError(f"{what} must be 3 finite numbers, got {values!r}")
    return tuple(round(x, _ROUND_MM) + 0.0 for x in v)  # type: ignore[return-value]


@dataclass(frozen=True)
class Click:
    """One click: a world point (LPS mm, (x, y, z)) that is inside (positive) or outside the structure."""

    world_xyz_mm: tuple[float, float, float]
    positive: bool
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "world_xyz_mm", _xyz(self.world_xyz_mm, "click xyz_mm"))
        object.__setattr__(self, "positive", bool(self.positive))

    def to_dict(self) -> dict:
        d = {"xyz_mm": list(self.world_xyz_mm), "positive": self.positive}
        if self.source:
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Click:
        return cls(world_xyz_mm=d["xyz_mm"], positive=d["positive"], source=str(d.get("source", "")))


@dataclass(frozen=True)
class PromptSet:
    """The clicks for one patch of one structure.

    Attributes:
        structure: structure name (e.g. ``liver``).
        component: connected component index (0 = largest); ``CORRECTION_COMPONENT`` for reviewer clicks.
        tile: tile index within the component (0 when the component fits in one patch).
        clicks: positive clicks first (the first one is the anchor), then negatives.
        center_xyz_mm: where the patch should be centred (LPS mm); defaults to the first positive click.
    """

    structure: str
    component: int
    tile: int
    clicks: tuple[Click, ...]
    center_xyz_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "clicks", tuple(self.clicks))
        if self.center_xyz_mm is None:
            pos = [c for c in self.clicks if c.positive]
            if pos:
                object.__setattr__(self, "center_xyz_mm", pos[0].world_xyz_mm)
        else:
            object.__setattr__(self, "center_xyz_mm", _xyz(self.center_xyz_mm, "center_xyz_mm"))

    @property
    def positives(self) -> list[Click]:
        return [c for c in self.clicks if c.positive]

    @property
    def negatives(self) -> list[Click]:
        return [c for c in self.clicks if not c.positive]

    def to_dict(self) -> dict:
        return {
            "structure": self.structure,
            "component": int(self.component),
            "tile": int(self.tile),
            "center_xyz_mm": None if self.center_xyz_mm is None else list(self.center_xyz_mm),
            "clicks": [c.to_dict() for c in self.clicks],
        }

    @classmethod
    def from_dict(cls, d: dict) -> PromptSet:
        return cls(
            structure=str(d["structure"]),
            component=int(d["component"]),
            tile=int(d["tile"]),
            clicks=tuple(Click.from_dict(c) for c in d["clicks"]),
            center_xyz_mm=d.get("center_xyz_mm"),
        )


@dataclass(frozen=True)
class StructureInfo:
    """What seeding saw of one structure in the coarse mask (world bbox of its kept components)."""

    name: str
    label: int
    volume_ml: float
    n_components: int
    bbox_min_xyz_mm: tuple[float, float, float]
    bbox_max_xyz_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "bbox_min_xyz_mm", _xyz(self.bbox_min_xyz_mm, "bbox_min_xyz_mm"))
        object.__setattr__(self, "bbox_max_xyz_mm", _xyz(self.bbox_max_xyz_mm, "bbox_max_xyz_mm"))
        object.__setattr__(self, "volume_ml", round(float(self.volume_ml), 4))

    def to_dict(self) -> dict:
        return {
            "label": int(self.label),
            "volume_ml": self.volume_ml,
            "n_components": int(self.n_components),
            "bbox_min_xyz_mm": list(self.bbox_min_xyz_mm),
            "bbox_max_xyz_mm": list(self.bbox_max_xyz_mm),
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> StructureInfo:
        return cls(
            name=name,
            label=int(d["label"]),
            volume_ml=float(d["volume_ml"]),
            n_components=int(d["n_components"]),
            bbox_min_xyz_mm=d["bbox_min_xyz_mm"],
            bbox_max_xyz_mm=d["bbox_max_xyz_mm"],
        )


@dataclass
class CasePrompts:
    """All prompt sets of one case, the structures they came from, and what was skipped (name -> reason)."""

    ct_geometry: Geometry
    prompt_sets: list[PromptSet] = field(default_factory=list)
    structures: dict[str, StructureInfo] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def structure_names(self) -> list[str]:
        """Structures with at least one prompt set, in first-appearance order."""
        return list(dict.fromkeys(p.structure for p in self.prompt_sets))

    def for_structure(self, name: str) -> list[PromptSet]:
        return [p for p in self.prompt_sets if p.structure == name]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "ct_geometry": self.ct_geometry.to_dict(),
            "settings": self.settings,
            "structures": {k: v.to_dict() for k, v in self.structures.items()},
            "prompt_sets": [p.to_dict() for p in self.prompt_sets],
            "skipped": dict(sorted(self.skipped.items())),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CasePrompts:
        return cls(
            ct_geometry=Geometry.from_dict(d["ct_geometry"]),
            prompt_sets=[PromptSet.from_dict(p) for p in d["prompt_sets"]],
            structures={k: StructureInfo.from_dict(k, v) for k, v in d.get("structures", {}).items()},
            skipped={str(k): str(v) for k, v in d.get("skipped", {}).items()},
            settings=dict(d.get("settings", {})),
        )


def _dumps(obj: dict) -> str:
    return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def write_prompts(path: str | os.PathLike[str], prompts: CasePrompts) -> None:
    """Write ``prompts`` as JSON, atomically; identical prompts give identical bytes."""
    atomic_write_text(path, _dumps(prompts.to_dict()))


def _read_json(path: Path, what: str, case: str | None, fix: str) -> dict:
    if not path.exists():
        raise InputDataError(f"{what} not found", case=case, path=path, expected=f"an existing {what}", fix=fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputDataError(f"{what} is not valid JSON", case=case, path=path, found=str(err), fix=fix) from err
    if not isinstance(data, dict):
        raise InputDataError(
            f"{what} must hold a JSON object", case=case, path=path, found=type(data).__name__, fix=fix
        )
    return data


def read_prompts(path: str | os.PathLike[str], *, case: str | None = None) -> CasePrompts:
    """Read a ``prompts.json`` written by :func:`write_prompts` (``ctsam seed``)."""
    path = Path(path)
    fix = "re-run 'ctsam seed' for this case"
    data = _read_json(path, "prompts file", case, fix)
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise InputDataError(
            "prompts file has an unknown format",
            case=case,
            path=path,
            expected=f"format {FORMAT!r} version {FORMAT_VERSION}",
            found=f"format {data.get('format')!r} version {data.get('format_version')!r}",
            fix=fix,
        )
    try:
        return CasePrompts.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise InputDataError(
            "prompts file is malformed", case=case, path=path, found=f"{type(err).__name__}: {err}", fix=fix
        ) from err


def read_corrections(path: str | os.PathLike[str], *, case: str | None = None) -> dict[str, list[Click]]:
    """Read reviewer clicks: ``{structure: [Click, ...]}`` (format in the module docstring)."""
    path = Path(path)
    fix = (
        'write {"format": "ctsam-corrections", "format_version": 1, "clicks": {"<structure>": '
        '[{"xyz_mm": [x, y, z], "positive": true}]}} (LPS world mm)'
    )
    data = _read_json(path, "corrections file", case, fix)
    if data.get("format", CORRECTIONS_FORMAT) != CORRECTIONS_FORMAT or data.get("format_version", 1) != FORMAT_VERSION:
        raise InputDataError(
            "corrections file has an unknown format",
            case=case,
            path=path,
            expected=f"format {CORRECTIONS_FORMAT!r} version {FORMAT_VERSION}",
            found=f"format {data.get('format')!r} version {data.get('format_version')!r}",
            fix=fix,
        )
    clicks = data.get("clicks")
    if not isinstance(clicks, dict):
        raise InputDataError(
            "corrections file has no 'clicks' mapping",
            case=case,
            path=path,
            expected="'clicks': {structure: [click, ...]}",
            found=repr(clicks)[:80],
            fix=fix,
        )
    out: dict[str, list[Click]] = {}
    for name in sorted(clicks):
        items = clicks[name]
        if not isinstance(items, list):
            raise InputDataError(
                f"corrections for {name!r} must be a list of clicks",
                case=case,
                path=path,
                found=type(items).__name__,
                fix=fix,
            )
        try:
            out[str(name)] = [
                Click(world_xyz_mm=c["xyz_mm"], positive=c["positive"], source="correction") for c in items
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise InputDataError(
                f"a correction click for {name!r} is malformed",
                case=case,
                path=path,
                expected='{"xyz_mm": [x, y, z], "positive": true|false}',
                found=f"{type(err).__name__}: {err}",
                fix=fix,
            ) from err
    return out


def write_corrections(path: str | os.PathLike[str], clicks: dict[str, list[Click]]) -> None:
    """Write reviewer clicks in the format :func:`read_corrections` reads."""
    obj = {
        "format": CORRECTIONS_FORMAT,
        "format_version": FORMAT_VERSION,
        "clicks": {
            k: [{"xyz_mm": list(c.world_xyz_mm), "positive": c.positive} for c in clicks[k]] for k in sorted(clicks)
        },
    }
    atomic_write_text(path, _dumps(obj))


def merge_corrections(prompts: CasePrompts, corrections: dict[str, list[Click]]) -> CasePrompts:
    """Add reviewer clicks to ``prompts`` (a new object; the input is not changed).

    Each corrected structure gets one extra prompt set (``component == CORRECTION_COMPONENT``)
    holding its reviewer clicks, positives first, in file order. A structure that seeding
    skipped becomes active when it receives at least one positive click. Clicks for a structure
    with neither prompts nor a positive correction are ignored (listed in ``settings``).
    """
    sets = list(prompts.prompt_sets)
    skipped = dict(prompts.skipped)
    ignored: list[str] = []
    known = set(prompts.structure_names())
    for name in sorted(corrections):
        clicks = corrections[name]
        pos = [c for c in clicks if c.positive]
        neg = [c for c in clicks if not c.positive]
        if not clicks:
            continue
        if name not in known and not pos:
            ignored.append(name)
            continue
        sets.append(PromptSet(structure=name, component=CORRECTION_COMPONENT, tile=0, clicks=tuple(pos + neg)))
        skipped.pop(name, None)
    settings = dict(prompts.settings)
    if corrections:
        settings["corrections"] = {"structures": sorted(corrections), "ignored_negative_only": ignored}
    return CasePrompts(
        ct_geometry=prompts.ct_geometry,
        prompt_sets=sets,
        structures=dict(prompts.structures),
        skipped=skipped,
        settings=settings,
    )
