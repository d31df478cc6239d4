"""Lesion clicks: the ``CLICKS.tsv`` table, checks against the CT, and clicks from a seed label map.

``CLICKS.tsv`` is tab-separated with a header line and one row per lesion::

    lesion_id  x      y      z       label
    1          -12.5  140.0  -310.0  liver_tumor
    2          61.0   128.0  -402.5  kidney_tumor

``lesion_id`` is a positive integer (it becomes the lesion's voxel value in the lesion map, so at
most 65535), ``x, y, z`` are world LPS millimetres (the same convention as prompts and reviewer
corrections), ``label`` (optional) names which model / preset segments that lesion. Lines starting
with ``#`` and blank lines are ignored. Every problem is an :class:`~ctsam.errors.InputDataError`
(exit code 2) naming the table row.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsam.errors import InputDataError
from ctsam.volume import Geometry, LabelMap

REQUIRED_COLUMNS = ("lesion_id", "x", "y", "z")
MAX_LESION_ID = 65535


@dataclass(frozen=True)
class Click:
    """One lesion's click.

    Attributes:
        lesion_id: the lesion's id (its voxel value in the lesion map), 1..65535.
        world_xyz_mm: the click, LPS world millimetres (x, y, z).
        label: which model/preset segments it (``None``: the default model).
        source: where the click came from, for messages and the sidecar (``"row 3"``, ``"seed component 2"``).
    """

    lesion_id: int
    world_xyz_mm: tuple[float, float, float]
    label: str | None = None
    source: str = ""


def _row_error(
    what: str, path: Path, row: int, found: str, *, case: str | None, expected: str, fix: str
) -> InputDataError:
    return InputDataError(what, case=case, path=f"{path} row {row}", expected=expected, found=found, fix=fix)


def read_clicks(path: str | os.PathLike[str], *, case: str | None = None) -> list[Click]:
    """Read and validate a ``CLICKS.tsv`` (see the module docstring); clicks in table order.

    Raises :class:`InputDataError` for a missing/empty table, missing columns, a non-integer or
    out-of-range id, a non-numeric or non-finite coordinate, or an id used twice (naming the rows).
    Rows are numbered as lines of the file (the header is row 1).
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            "clicks table not found",
            case=case,
            path=path,
            expected="an existing CLICKS.tsv",
            found="no such file",
            fix="check the path (and the samples.tsv lesion column)",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputDataError(
            "clicks table is not UTF-8 text",
            case=case,
            path=path,
            found=str(err),
            fix="write the table as tab-separated UTF-8 text",
        ) from err
    numbered = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise InputDataError(
            "clicks table is empty",
            case=case,
            path=path,
            expected="a header 'lesion_id<TAB>x<TAB>y<TAB>z[<TAB>label]' and one row per lesion",
            found="no lines",
            fix="add one row per lesion (or leave the case out)",
        )
    reader = csv.reader((line for _, line in numbered), delimiter="\t")
    rows = list(reader)
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputDataError(
            "clicks table lacks required columns",
            case=case,
            path=f"{path} row {numbered[0][0]}",
            expected="tab-separated columns lesion_id, x, y, z (and optionally label)",
            found=f"columns {header!r}; missing {', '.join(missing)}",
            fix="write a header line 'lesion_id<TAB>x<TAB>y<TAB>z<TAB>label'",
        )
    if len(rows) == 1:
        raise InputDataError(
            "clicks table is empty",
            case=case,
            path=path,
            expected="one row per lesion below the header",
            found="a header and no rows",
            fix="add one row per lesion (or leave the case out)",
        )
    col = {name: header.index(name) for name in header}
    clicks: list[Click] = []
    seen: dict[int, int] = {}
    for (n, _), values in zip(numbered[1:], rows[1:]):
        values = [v.strip() for v in values]
        if len(values) < len(header):
            values += [""] * (len(header) - len(values))
        raw_id = values[col["lesion_id"]]
        try:
            lesion_id = int(raw_id)
        except ValueError:
            raise _row_error(
                "clicks table: lesion_id is not an integer",
                path,
                n,
                repr(raw_id),
                case=case,
                expected=f"an integer 1..{MAX_LESION_ID}",
                fix="give every lesion a positive integer id",
            ) from None
        if not 1 <= lesion_id <= MAX_LESION_ID:
            raise _row_error(
                "clicks table: lesion_id out of range",
                path,
                n,
                str(lesion_id),
                case=case,
                expected=f"1..{MAX_LESION_ID} (0 is background in the lesion map)",
                fix="renumber the lesions from 1",
            )
        if lesion_id in seen:
            raise _row_error(
                "clicks table: duplicate lesion_id",
                path,
                n,
                f"lesion_id {lesion_id} also on row {seen[lesion_id]}",
                case=case,
                expected="each lesion_id once",
                fix="give every lesion its own id",
            )
        seen[lesion_id] = n
        coords = []
        for axis in ("x", "y", "z"):
            raw = values[col[axis]]
            try:
                v = float(raw)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise _row_error(
                    f"clicks table: coordinate {axis} is not a finite number",
                    path,
                    n,
                    f"lesion_id {lesion_id}: {axis}={raw!r}",
                    case=case,
                    expected="world LPS millimetres (a finite number)",
                    fix="fix the coordinate",
                )
            coords.append(v)
        label = values[col["label"]] if "label" in col and values[col["label"]] else None
        clicks.append(Click(lesion_id, (coords[0], coords[1], coords[2]), label, f"row {n}"))
    return clicks


def click_index_zyx(geometry: Geometry, click: Click) -> np.ndarray:
    """The click's continuous voxel index (z, y, x) on ``geometry``."""
    return geometry.world_to_index(np.asarray(click.world_xyz_mm, dtype=float))[::-1]


def check_clicks_inside(
    clicks: list[Click], geometry: Geometry, *, case: str | None = None, path: str | os.PathLike[str] | None = None
) -> None:
    """Raise :class:`InputDataError` naming the first click whose nearest voxel is outside the CT."""
    shape = np.asarray(geometry.shape_zyx, dtype=float)
    for click in clicks:
        idx = click_index_zyx(geometry, click)
        if np.all(idx >= -0.5) and np.all(idx < shape - 0.5):
            continue
        lo, hi = geometry.world_bounds_mm()
        where = f"{path} {click.source}" if path else click.source
        raise InputDataError(
            "lesion click lies outside the CT",
            case=case,
            path=where or None,
            expected=f"a point within the CT's voxel centres, x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, "
            f"z {lo[2]:.1f}..{hi[2]:.1f} mm (LPS)",
            found=f"lesion_id {click.lesion_id} at ({', '.join(f'{v:.1f}' for v in click.world_xyz_mm)}) mm",
            fix="give the click in world LPS mm of this CT (not voxel indices, not RAS)",
        )


def clicks_from_seeds(seeds: LabelMap, *, case: str | None = None) -> list[Click]:
    """One click per connected component (26-connected, per label value) of a seed label map.

    Each component's click is its most interior voxel (largest distance to the component's
    outside, in mm; the first such voxel in z, y, x order on ties), so it lies inside even for
    curved marks. Lesion ids are 1, 2, ... in order of label value, then of each component's
    first voxel (z, y, x). A label's name becomes the click's ``label`` unless it is the
    automatic ``label_<k>``.
    """
    from scipy import ndimage

    array = seeds.array
    values = [int(v) for v in np.unique(array) if v != 0]
    if not values:
        raise InputDataError(
            "seed label map is empty",
            case=case,
            expected="at least one non-zero voxel (one mark per lesion)",
            found="only zeros",
            fix="pass a seed map with a mark inside each lesion, or use --clicks",
        )
    spacing_zyx = tuple(reversed(seeds.geometry.spacing_xyz_mm))
    structure = np.ones((3, 3, 3), dtype=bool)
    clicks: list[Click] = []
    for value in values:
        components, _ = ndimage.label(array == value, structure=structure)
        for k, sl in enumerate(ndimage.find_objects(components), start=1):
            if sl is None:
                continue
            padded = [slice(max(s.start - 1, 0), s.stop + 1) for s in sl]
            inside = np.pad(components[tuple(padded)] == k, 1)  # an outside layer even at the image border
            depth = ndimage.distance_transform_edt(inside, sampling=spacing_zyx)
            best = np.unravel_index(int(np.argmax(depth)), depth.shape)
            index_zyx = [p.start + b - 1 for p, b in zip(padded, best)]
            world = seeds.geometry.index_to_world(np.asarray(index_zyx[::-1], dtype=float))
            name = seeds.labels.get(value)
            label = name if name and name != f"label_{value}" else None
            clicks.append(
                Click(
                    len(clicks) + 1,
                    (float(world[0]), float(world[1]), float(world[2])),
                    label,
                    f"seed label {value} component {k}",
                )
            )
    if len(clicks) > MAX_LESION_ID:
        raise InputDataError(
            "seed label map has too many components",
            case=case,
            found=str(len(clicks)),
            expected=f"at most {MAX_LESION_ID}",
            fix="pass one mark per lesion",
        )
    return clicks
