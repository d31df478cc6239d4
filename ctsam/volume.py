"""Volumes that carry their geometry.

Conventions (the same everywhere in ctsam):

* ``array`` is indexed ``(z, y, x)``: ``array[k, j, i]`` is the voxel at index ``(i, j, k)``.
* World coordinates are ITK/DICOM **LPS** millimetres, written ``(x, y, z)``.
* ``spacing_xyz_mm``, ``origin_xyz_mm`` and the columns of ``direction`` follow ITK: column ``c``
  of ``direction`` is the world direction of index axis ``c`` (x, then y, then z).

So ``world_xyz = origin_xyz_mm + direction @ (spacing_xyz_mm * index_xyz)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctsam.errors import SpaceMismatchError

_DEFAULT_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Geometry:
    """A voxel grid in world space.

    Attributes:
        shape_zyx: number of voxels along (z, y, x).
        spacing_xyz_mm: voxel size along index axes (x, y, z), in mm.
        origin_xyz_mm: LPS world position of voxel (0, 0, 0), in mm.
        direction: 3x3 direction cosines; column c is index axis c (x, y, z) in LPS.
    """

    shape_zyx: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_zyx", tuple(int(v) for v in self.shape_zyx))
        object.__setattr__(self, "spacing_xyz_mm", tuple(float(v) for v in self.spacing_xyz_mm))
        object.__setattr__(self, "origin_xyz_mm", tuple(float(v) for v in self.origin_xyz_mm))
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in d))
        if len(self.shape_zyx) != 3 or min(self.shape_zyx) < 1:
            raise ValueError(f"shape_zyx must be 3 positive ints, got {self.shape_zyx}")
        if min(self.spacing_xyz_mm) <= 0:
            raise ValueError(f"spacing_xyz_mm must be positive, got {self.spacing_xyz_mm}")

    # ------------------------------------------------------------------ matrices
    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return tuple(reversed(self.shape_zyx))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_xyz_mm)) / 1000.0

    def index_to_world_matrix(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous index (x, y, z, 1) to LPS world (x, y, z, 1) in mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing_xyz_mm)
        m[:3, 3] = self.origin_xyz_mm
        return m

    def affine_ras(self) -> np.ndarray:
        """The NIfTI (RAS) affine of this grid, for index order (i, j, k) = (x, y, z)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.index_to_world_matrix()

    @classmethod
    def from_affine_ras(cls, affine: np.ndarray, shape_zyx: tuple[int, int, int]) -> Geometry:
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)
        m = lps[:3, :3]
        spacing = np.linalg.norm(m, axis=0)
        return cls(
            shape_zyx=shape_zyx,
            spacing_xyz_mm=tuple(spacing),
            origin_xyz_mm=tuple(lps[:3, 3]),
            direction=tuple(map(tuple, m / spacing)),
        )

    # ------------------------------------------------------------------ transforms
    def index_to_world(self, index_xyz: np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) voxel indices, shape (..., 3) -> LPS world mm, shape (..., 3)."""
        idx = np.asarray(index_xyz, dtype=float)
        m = self.index_to_world_matrix()
        return idx @ m[:3, :3].T + m[:3, 3]

    def world_to_index(self, world_xyz: np.ndarray) -> np.ndarray:
        """LPS world mm, shape (..., 3) -> continuous (x, y, z) voxel indices, shape (..., 3)."""
        w = np.asarray(world_xyz, dtype=float)
        m = self.index_to_world_matrix()
        return (w - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T

    def world_bounds_mm(self) -> np.ndarray:
        """(2, 3) array: min and max LPS world (x, y, z) over the centres of the 8 corner voxels."""
        sx, sy, sz = (n - 1 for n in self.shape_xyz)
        corners = np.array([[x, y, z] for x in (0, sx) for y in (0, sy) for z in (0, sz)], dtype=float)
        world = self.index_to_world(corners)
        return np.stack([world.min(axis=0), world.max(axis=0)])

    # ------------------------------------------------------------------ comparison
    def same_space(self, other: Geometry, *, tolerance_mm: float = _DEFAULT_TOLERANCE_MM) -> bool:
        """True if both grids have the same shape and their corner voxels agree within tolerance."""
        if self.shape_zyx != other.shape_zyx:
            return False
        corners = np.array(
            [[0, 0, 0], [s - 1 for s in self.shape_xyz], [self.shape_xyz[0] - 1, 0, 0], [0, self.shape_xyz[1] - 1, 0]],
            dtype=float,
        )
        return bool(np.max(np.abs(self.index_to_world(corners) - other.index_to_world(corners))) <= tolerance_mm)

    def describe(self) -> str:
        d = np.round(self.direction_matrix, 4).tolist()
        return (
            f"shape_zyx={self.shape_zyx} spacing_xyz_mm={tuple(round(v, 4) for v in self.spacing_xyz_mm)} "
            f"origin_xyz_mm={tuple(round(v, 3) for v in self.origin_xyz_mm)} direction={d}"
        )

    def to_dict(self) -> dict:
        return {
            "shape_zyx": list(self.shape_zyx),
            "spacing_xyz_mm": list(self.spacing_xyz_mm),
            "origin_xyz_mm": list(self.origin_xyz_mm),
            "direction": [list(r) for r in self.direction],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(
            shape_zyx=tuple(d["shape_zyx"]),
            spacing_xyz_mm=tuple(d["spacing_xyz_mm"]),
            origin_xyz_mm=tuple(d["origin_xyz_mm"]),
            direction=tuple(tuple(r) for r in d["direction"]),
        )


def check_same_space(
    a: Geometry,
    b: Geometry,
    *,
    name_a: str = "image",
    name_b: str = "label map",
    case: str | None = None,
    tolerance_mm: float = _DEFAULT_TOLERANCE_MM,
) -> None:
    """Raise :class:`SpaceMismatchError` (printing both geometries) unless ``a`` and ``b`` match."""
    if a.same_space(b, tolerance_mm=tolerance_mm):
        return
    raise SpaceMismatchError(
        f"{name_a} and {name_b} are not on the same voxel grid",
        case=case,
        expected=f"{name_b} on the grid of {name_a}: {a.describe()}",
        found=f"{name_b}: {b.describe()}",
        fix=(f"resample {name_b} onto the grid of {name_a} (nearest neighbour for labels), or pass the matching files"),
    )


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT image in Hounsfield units. ``array`` is (z, y, x), usually int16."""

    array: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.geometry.shape_zyx:
            raise ValueError(f"array shape {self.array.shape} != geometry shape_zyx {self.geometry.shape_zyx}")

    def __repr__(self) -> str:
        return f"CTVolume(dtype={self.array.dtype}, {self.geometry.describe()})"


@dataclass(frozen=True, eq=False)
class LabelMap:
    """An integer label map with its label table ``{index: name}`` (0 = background, not listed)."""

    array: np.ndarray
    geometry: Geometry
    labels: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.geometry.shape_zyx:
            raise ValueError(f"array shape {self.array.shape} != geometry shape_zyx {self.geometry.shape_zyx}")
        if not np.issubdtype(self.array.dtype, np.integer):
            raise ValueError(f"label map must have an integer dtype, got {self.array.dtype}")

    def present_labels(self) -> list[int]:
        """Label indices that occur in the array (excluding 0), sorted."""
        values = np.unique(self.array)
        return [int(v) for v in values if v != 0]

    def __repr__(self) -> str:
        return f"LabelMap(dtype={self.array.dtype}, {len(self.labels)} labels, {self.geometry.describe()})"


def z_slabs(shape_zyx, voxels: int = 1 << 23):
    """Slices of z covering a volume in slabs of about ``voxels`` voxels (at least one slice each), so that
    a pass with int64 temporaries (``np.bincount``) stays bounded on a 512 x 512 x 1000 CT."""
    step = max(1, voxels // max(1, int(shape_zyx[1]) * int(shape_zyx[2])))
    for z0 in range(0, int(shape_zyx[0]), step):
        yield slice(z0, min(z0 + step, int(shape_zyx[0])))


def smallest_label_dtype(max_label: int) -> np.dtype:
    """uint8 when every label fits, else uint16."""
    return np.dtype(np.uint8) if max_label <= 255 else np.dtype(np.uint16)
