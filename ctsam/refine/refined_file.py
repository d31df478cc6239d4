"""The per-case refinement result: one probability crop per structure, on the CT grid.

``ctsam refine`` writes it, ``ctsam fuse`` and ``ctsam qc`` read it. One file per case
(``refined.npz``): a zip holding one ``.npy`` per structure plus ``meta.json``. Files are written
with fixed zip timestamps, so identical results give byte-identical files (sha256-stable).

Probabilities are stored as ``uint8`` (``round(p * 255)``) inside the structure's bounding box on
the CT voxel grid, so a whole-body case with 107 structures stays a few MB and never needs 107
full-size float volumes in memory.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctsam.errors import InputDataError
from ctsam.io.atomic import atomic_path
from ctsam.volume import Geometry

FORMAT_VERSION = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, eq=False)
class StructureProbability:
    """A refined structure.

    Attributes:
        name: structure name (TotalSegmentator ``total`` vocabulary, e.g. ``liver``).
        bbox_start_zyx: index of ``probs_u8[0, 0, 0]`` in the CT grid.
        probs_u8: (dz, dy, dx) uint8 probabilities, ``round(p * 255)``.
        quality: the model's quality-head score (predicted IoU), NaN when unknown.
        n_decodes: decoder runs spent on this structure.
        n_patches: distinct 64^3 patches that contributed.
    """

    name: str
    bbox_start_zyx: tuple[int, int, int]
    probs_u8: np.ndarray
    quality: float = float("nan")
    n_decodes: int = 0
    n_patches: int = 0

    def __post_init__(self) -> None:
        if self.probs_u8.dtype != np.uint8 or self.probs_u8.ndim != 3:
            raise ValueError(f"probs_u8 must be a 3-D uint8 array, got {self.probs_u8.dtype} {self.probs_u8.shape}")

    @property
    def bbox_stop_zyx(self) -> tuple[int, int, int]:
        return tuple(int(s + n) for s, n in zip(self.bbox_start_zyx, self.probs_u8.shape))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Slices of the CT grid covered by ``probs_u8``."""
        return tuple(slice(a, b) for a, b in zip(self.bbox_start_zyx, self.bbox_stop_zyx))  # type: ignore[return-value]

    def probabilities(self) -> np.ndarray:
        """float32 probabilities in [0, 1] for the crop."""
        return self.probs_u8.astype(np.float32) / 255.0


def probs_to_u8(probs: np.ndarray) -> np.ndarray:
    """float probabilities in [0, 1] -> uint8 ``round(p * 255)`` (clipped)."""
    return np.clip(np.rint(np.asarray(probs, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


@dataclass(eq=False)
class RefinedCase:
    """All refined structures of one case plus what was skipped and run metadata."""

    geometry: Geometry
    structures: list[StructureProbability] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def by_name(self) -> dict[str, StructureProbability]:
        return {s.name: s for s in self.structures}


def save_refined(path: str | os.PathLike[str], case: RefinedCase) -> None:
    """Write ``case`` atomically and deterministically."""
    meta = {
        "format_version": FORMAT_VERSION,
        "geometry": case.geometry.to_dict(),
        "skipped": dict(sorted(case.skipped.items())),
        "meta": case.meta,
        "structures": [],
    }
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, s in enumerate(case.structures):
            entry = f"s{i:03d}.npy"
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(s.probs_u8), allow_pickle=False)
            info = zipfile.ZipInfo(entry, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
            meta["structures"].append(
                {
                    "name": s.name,
                    "entry": entry,
                    "bbox_start_zyx": list(s.bbox_start_zyx),
                    "shape_zyx": list(s.probs_u8.shape),
                    "quality": None if s.quality != s.quality else float(s.quality),
                    "n_decodes": int(s.n_decodes),
                    "n_patches": int(s.n_patches),
                }
            )
        info = zipfile.ZipInfo("meta.json", date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, json.dumps(meta, indent=1, sort_keys=False, allow_nan=False))


def load_refined(path: str | os.PathLike[str], *, case: str | None = None) -> RefinedCase:
    """Read a file written by :func:`save_refined` (never unpickles)."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(
            "refined result not found", case=case, path=path, fix="run 'ctsam refine' for this case first"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
            if meta.get("format_version") != FORMAT_VERSION:
                raise InputDataError(
                    "refined result has an unknown format version",
                    case=case,
                    path=path,
                    expected=str(FORMAT_VERSION),
                    found=str(meta.get("format_version")),
                    fix="re-run 'ctsam refine' with this ctsam version",
                )
            geometry = Geometry.from_dict(meta["geometry"])
            structures = []
            for s in meta["structures"]:
                arr = np.lib.format.read_array(io.BytesIO(zf.read(s["entry"])), allow_pickle=False)
                structures.append(
                    StructureProbability(
                        name=s["name"],
                        bbox_start_zyx=tuple(s["bbox_start_zyx"]),
                        probs_u8=arr,
                        quality=float("nan") if s["quality"] is None else float(s["quality"]),
                        n_decodes=s["n_decodes"],
                        n_patches=s["n_patches"],
                    )
                )
    except InputDataError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise InputDataError(
            "refined result is unreadable",
            case=case,
            path=path,
            expected="a refined.npz written by 'ctsam refine'",
            found=f"{type(err).__name__}: {err}",
            fix="delete it and re-run 'ctsam refine' for this case",
        ) from err
    return RefinedCase(geometry=geometry, structures=structures, skipped=meta["skipped"], meta=meta["meta"])
