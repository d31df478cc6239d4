"""The class catalogue: TotalSegmentator v2 ``total`` classes, the 107 CT-SAM3D structures, and
the map between them. Pure data and lookups: no torch, no numpy.

Data files (``ctsam/resources/labels/``), each row with its provenance:

* ``ts_total.tsv``: the 117 TotalSegmentator v2 ``total`` classes (id, name, 1.5 mm part model,
  relation to CT-SAM3D).
* ``ctsam107.tsv``: the 107 CT-SAM3D / TotalSeg++ structures. **Indices are presumed**: 1-104
  follow TotalSegmentator's ``total_v1`` order, 105-107 (tissue classes) are unknown in order
  and partly in name (ctsam3d.md section 2). Each row says how it maps to ``total``:

  - ``one_to_one`` (97): identical name in ``total``;
  - ``many_to_one`` (5 heart parts): part of ``total`` ``heart`` (id 51); exact classes only in
    the licensed ``heartchambers_highres`` task;
  - ``licensed_only`` (pulmonary_artery, face, 3 tissue classes): no ``total`` counterpart,
    exact classes in licensed tasks.

  ``total`` classes with no CT-SAM3D counterpart (19 of them, ``ctsam107_relation = none``)
  plus ``heart`` (only a many->1 target) keep their coarse mask by default.
* ``aliases.tsv``: other names accepted for user label maps (TotalSegmentator sub-task names,
  common synonyms), each with its provenance.

**Coarse id space.** Every coarse label map ctsam writes uses one vocabulary: ids 1-117 are the
TotalSegmentator ``total`` ids, and ids 118-127 are ctsam extension ids for the 10 CT-SAM3D
structures ``total`` lacks (heart chambers, pulmonary artery, face, tissue classes), used only
when a user label map supplies them. :func:`coarse_catalogue` returns it.

**Output vocabulary.** The fused label map's label table (:func:`default_vocabulary`): the 107
structures, optionally followed by the ``total`` classes without a 1:1 counterpart; fusion writes
it and QC names structures by it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from ctsam.errors import ConfigError
from ctsam.resources import resource_path

#: Mapping kinds of a CT-SAM3D structure onto TotalSegmentator ``total``.
MAPPING_KINDS = ("one_to_one", "many_to_one", "licensed_only")
#: Relation of a ``total`` class to the CT-SAM3D vocabulary.
TS_RELATIONS = ("one_to_one", "many_to_one_target", "none")

N_TS_TOTAL = 117
N_CTSAM = 107


@dataclass(frozen=True)
class TsClass:
    """A TotalSegmentator v2 ``total`` class.

    Attributes:
        index: the ``total`` label id (1-117).
        name: the class name (e.g. ``kidney_left``).
        part_task_id: the 1.5 mm part model (291-295) that predicts it.
        ctsam107_relation: ``one_to_one``, ``many_to_one_target`` (heart) or ``none``.
        provenance: where the entry comes from.
    """

    index: int
    name: str
    part_task_id: int
    ctsam107_relation: str
    provenance: str


@dataclass(frozen=True)
class Structure:
    """One of the 107 CT-SAM3D structures.

    Attributes:
        index: presumed CT-SAM3D / TotalSeg++ label id (1-107), see ``index_provenance``.
        name: TotalSegmentator v1 style name (e.g. ``heart_myocardium``).
        ts_total_id: the ``total`` id it maps to (many->1 for heart parts), or None.
        mapping_kind: ``one_to_one``, ``many_to_one`` or ``licensed_only``.
        coarse_id: its id in ctsam's coarse label maps (= ``ts_total_id`` for 1:1, else 118-127).
        licensed_task, licensed_class: the licensed TotalSegmentator task/class with the exact
            structure, or None.
        index_provenance, mapping_provenance: where the index and the mapping come from.
    """

    index: int
    name: str
    ts_total_id: int | None
    mapping_kind: str
    coarse_id: int
    licensed_task: str | None
    licensed_class: str | None
    index_provenance: str
    mapping_provenance: str

    @property
    def provenance(self) -> str:
        return f"index: {self.index_provenance}; mapping: {self.mapping_provenance}"


@dataclass(frozen=True)
class Alias:
    alias: str
    name: str
    provenance: str


def _rows(filename: str) -> list[dict[str, str]]:
    path = resource_path(f"labels/{filename}")
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _opt_int(text: str) -> int | None:
    return int(text) if text.strip() else None


@lru_cache(maxsize=1)
def ts_total_classes() -> tuple[TsClass, ...]:
    """The 117 ``total`` classes in id order."""
    out = tuple(
        TsClass(
            index=int(r["ts_id"]),
            name=r["name"],
            part_task_id=int(r["part_task_id"]),
            ctsam107_relation=r["ctsam107_relation"],
            provenance=r["provenance"],
        )
        for r in _rows("ts_total.tsv")
    )
    if [c.index for c in out] != list(range(1, N_TS_TOTAL + 1)):
        raise RuntimeError("ts_total.tsv must list ids 1..117 in order")
    return out


@lru_cache(maxsize=1)
def ctsam107_structures() -> tuple[Structure, ...]:
    """The 107 CT-SAM3D structures in (presumed) index order."""
    out = tuple(
        Structure(
            index=int(r["index"]),
            name=r["name"],
            ts_total_id=_opt_int(r["ts_total_id"]),
            mapping_kind=r["mapping_kind"],
            coarse_id=int(r["coarse_id"]),
            licensed_task=r["licensed_task"] or None,
            licensed_class=r["licensed_class"] or None,
            index_provenance=r["index_provenance"],
            mapping_provenance=r["mapping_provenance"],
        )
        for r in _rows("ctsam107.tsv")
    )
    if [s.index for s in out] != list(range(1, N_CTSAM + 1)):
        raise RuntimeError("ctsam107.tsv must list indices 1..107 in order")
    return out


@lru_cache(maxsize=1)
def aliases() -> tuple[Alias, ...]:
    return tuple(Alias(r["alias"], r["name"], r["provenance"]) for r in _rows("aliases.tsv"))


# ---------------------------------------------------------------------------- lookups
@lru_cache(maxsize=1)
def _ts_by_name() -> dict[str, TsClass]:
    return {c.name: c for c in ts_total_classes()}


@lru_cache(maxsize=1)
def _ctsam_by_name() -> dict[str, Structure]:
    return {s.name: s for s in ctsam107_structures()}


def ts_total_id(name: str) -> int:
    """``total`` id of a TotalSegmentator class name (exact name). KeyError if not a ``total`` class."""
    return _ts_by_name()[name].index


def ts_total_name(index: int) -> str:
    """``total`` class name of id 1-117."""
    if not 1 <= index <= N_TS_TOTAL:
        raise KeyError(index)
    return ts_total_classes()[index - 1].name


def ts_total_labels() -> dict[int, str]:
    """``{id: name}`` of all 117 ``total`` classes."""
    return {c.index: c.name for c in ts_total_classes()}


def ctsam107_index(name: str) -> int:
    """Presumed CT-SAM3D index (1-107) of a structure name. KeyError if not one of the 107."""
    return _ctsam_by_name()[name].index


def structure(name: str) -> Structure:
    """The CT-SAM3D structure called ``name``. KeyError if not one of the 107."""
    return _ctsam_by_name()[name]


@lru_cache(maxsize=1)
def coarse_catalogue() -> dict[int, str]:
    """The coarse id space: ``total`` ids 1-117 plus ctsam extension ids 118-127, ``{id: name}``."""
    out = ts_total_labels()
    for s in ctsam107_structures():
        if s.coarse_id in out:
            if out[s.coarse_id] != s.name:
                raise RuntimeError(f"coarse id {s.coarse_id} is both {out[s.coarse_id]} and {s.name}")
        else:
            out[s.coarse_id] = s.name
    return dict(sorted(out.items()))


@lru_cache(maxsize=1)
def _coarse_by_name() -> dict[str, int]:
    return {name: index for index, name in coarse_catalogue().items()}


def coarse_id(name: str) -> int:
    """Id of a catalogue name in the coarse id space. KeyError if not in the catalogue."""
    return _coarse_by_name()[name]


def laterality(name: str) -> str | None:
    """``"left"``, ``"right"`` or None for a structure name (``rib_left_3`` -> ``left``)."""
    parts = name.lower().split("_")
    if "left" in parts:
        return "left"
    if "right" in parts:
        return "right"
    return None


def contralateral(name: str) -> str | None:
    """The same structure on the other side (``kidney_left`` -> ``kidney_right``), or None."""
    side = laterality(name)
    if side is None:
        return None
    other = "right" if side == "left" else "left"
    parts = [other if p == side else p for p in name.split("_")]
    candidate = "_".join(parts)
    return candidate if candidate in _coarse_by_name() else None


def is_refined_by_default(name: str) -> bool:
    """True for CT-SAM3D structures with a 1:1 ``total`` counterpart (97 of them).

    All others keep their coarse mask by default: the 19 ``total`` classes CT-SAM3D never saw
    (refining them would be zero-shot), ``heart`` (CT-SAM3D knows only its parts), and the 10
    CT-SAM3D structures without a ``total`` mask to seed from.
    """
    s = _ctsam_by_name().get(name)
    return s is not None and s.mapping_kind == "one_to_one"


# ---------------------------------------------------------------------------- name matching
_SEP = re.compile(r"[\s\-./]+")


def normalize_name(raw: str) -> str:
    """Lower case, separators to ``_``; ``left_kidney`` / ``kidney left`` -> ``kidney_left``."""
    text = _SEP.sub("_", raw.strip().lower())
    text = re.sub(r"_+", "_", text).strip("_")
    for side in ("left", "right"):
        if text.startswith(side + "_"):
            text = text[len(side) + 1 :] + "_" + side
    return text


@lru_cache(maxsize=1)
def _lookup() -> dict[str, tuple[str, str]]:
    """normalised name -> (catalogue name, how it matched)."""
    table: dict[str, tuple[str, str]] = {}
    for name in coarse_catalogue().values():
        table[normalize_name(name)] = (name, "exact")
    for a in aliases():
        if a.name not in _coarse_by_name():
            raise RuntimeError(f"alias {a.alias!r} points to {a.name!r}, which is not in the catalogue")
        table.setdefault(normalize_name(a.alias), (a.name, f"alias ({a.provenance})"))
    return table


@dataclass(frozen=True)
class NameMatch:
    """How a user's label name matched the catalogue."""

    raw: str
    name: str | None
    how: str

    @property
    def known(self) -> bool:
        return self.name is not None


def match_name(raw: str) -> NameMatch:
    """Map a label name onto the catalogue (exact, case/separator-insensitive, or alias)."""
    if raw in _coarse_by_name():
        return NameMatch(raw, raw, "exact")
    hit = _lookup().get(normalize_name(raw))
    if hit is None:
        return NameMatch(raw, None, "unknown")
    name, how = hit
    return NameMatch(raw, name, "normalized" if how == "exact" else how)


# ---------------------------------------------------------------------------- config
def refined_structures(config: dict | None = None) -> list[str]:
    """Names (coarse catalogue) the refine stage refines, in coarse-id order.

    Default: every CT-SAM3D structure with a 1:1 ``total`` counterpart. ``structures.refine_include``
    adds names (e.g. ``heart_myocardium`` when a user label map supplies chambers, or a ``total``
    class for zero-shot refinement); ``structures.refine_exclude`` removes names. Unknown names in
    either list raise :class:`ConfigError`.
    """
    section = (config or {}).get("structures", {}) or {}
    include = list(section.get("refine_include", []) or [])
    exclude = list(section.get("refine_exclude", []) or [])
    catalogue = _coarse_by_name()
    for key, names in (("refine_include", include), ("refine_exclude", exclude)):
        bad = [n for n in names if n not in catalogue]
        if bad:
            raise ConfigError(
                f"unknown structure name(s) in structures.{key}",
                expected="names from the coarse catalogue (TotalSegmentator total names or CT-SAM3D names)",
                found=", ".join(bad),
                fix="use exact names, e.g. 'kidney_left' (see ctsam/resources/labels/*.tsv)",
            )
    chosen = {s.name for s in ctsam107_structures() if s.mapping_kind == "one_to_one"}
    chosen |= set(include)
    chosen -= set(exclude)
    return sorted(chosen, key=lambda n: catalogue[n])


def keeps_coarse(name: str, config: dict | None = None) -> bool:
    """True if the fused result takes ``name`` from the coarse mask (it is not refined)."""
    return name not in set(refined_structures(config))


# ---------------------------------------------------------------------------------------- output vocabulary
# The fused label map's label table (fusion writes it, QC names structures by it).
@dataclass(frozen=True)
class OutputVocabulary:
    """The fused label table and how source (TotalSegmentator ``total``) names map onto it.

    Attributes:
        labels: output index -> output structure name (1-based, 0 = background).
        source_to_output: source structure name -> output structure name. Output names map to
            themselves implicitly, so label maps already in the output vocabulary also work.
    """

    labels: dict[int, str]
    source_to_output: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = list(self.labels.values())
        if len(set(names)) != len(names):
            raise ValueError("output vocabulary has duplicate names")
        index = {n: i for i, n in self.labels.items()}
        bad = sorted(v for v in self.source_to_output.values() if v not in index)
        if bad:
            raise ValueError(f"source_to_output maps onto names missing from the output labels: {bad[:5]}")
        object.__setattr__(self, "_index", index)

    def output_name(self, source_name: str) -> str | None:
        """The output name of a source (coarse/refined) structure, or None when it has none."""
        if source_name in self.source_to_output:
            return self.source_to_output[source_name]
        return source_name if source_name in self._index else None  # type: ignore[attr-defined]

    def output_index(self, output_name: str) -> int | None:
        return self._index.get(output_name)  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        return {
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "source_to_output": dict(sorted(self.source_to_output.items())),
        }


def build_vocabulary(
    structures: Sequence[str],
    one_to_one: dict[str, str],
    source_classes: Iterable[str],
    *,
    keep_unmapped: bool,
) -> OutputVocabulary:
    """Assemble the output vocabulary.

    Args:
        structures: the output structure names in id order (ids 1..len).
        one_to_one: source name -> output name for the classes with an exact counterpart.
        source_classes: every source class name in source id order (e.g. all 117 TotalSegmentator
            ``total`` classes). Those without a 1:1 counterpart become extra output classes numbered
            after ``len(structures)`` when ``keep_unmapped`` is set, in this order.
    """
    labels = {i + 1: n for i, n in enumerate(structures)}
    mapping = dict(one_to_one)
    if keep_unmapped:
        taken = set(structures)
        nxt = len(structures) + 1
        for name in source_classes:
            if name in mapping or name in taken:
                continue
            labels[nxt] = name
            taken.add(name)
            nxt += 1
    return OutputVocabulary(labels=labels, source_to_output=mapping)


def default_vocabulary(*, keep_unmapped: bool = True) -> OutputVocabulary:
    """The 107 CT-SAM3D structures (ids 1..107, :mod:`ctsam.labels`) plus, when ``keep_unmapped``,
    the TotalSegmentator ``total`` classes without a 1:1 counterpart (``heart`` and the 19 classes
    CT-SAM3D never saw) as ids 108.. in ``total`` id order.

    The 1:1 classes share their names with ``total``, so no explicit name map is needed; coarse
    maps that carry CT-SAM3D names (ctsam's coarse extension ids, e.g. heart chambers from a user
    label map) map by identity too.
    """
    structures = [s.name for s in ctsam107_structures()]
    one_to_one = {
        ts_total_name(s.ts_total_id): s.name
        for s in ctsam107_structures()
        if s.mapping_kind == "one_to_one" and s.ts_total_id is not None
    }
    return build_vocabulary(
        structures,
        one_to_one,
        [c.name for c in ts_total_classes()],
        keep_unmapped=keep_unmapped,
    )
