"""Input guards: refuse a CT that cannot be a CT before any stage spends time on it.

Called at the end of ``ctsam convert`` and ``ctsam import-ct`` (before anything is written), with
the config section ``guards``. Each failed check is a :class:`GuardError` (exit code 2) naming the
case, the value found and the accepted range, so a cohort run lists the case in ``failures.tsv``
and goes on with the others:

* non-finite voxels (NaN, +-inf) -- a float image that was never a CT, or a broken resampling;
* any voxel outside ``hu_range`` (int16-storable HU);
* an HU *span* implausible for CT: the darkest voxel must be at or below ``hu_min_at_most`` (air,
  lung or fat is in every body CT) and the brightest at or above ``hu_max_at_least`` (soft tissue)
  -- a normalised 0..1 image, an MR or a mask fails this;
* voxel spacing outside ``spacing_mm`` on any axis (e.g. metres written as millimetres);
* a grid outside ``size_voxels`` on any axis, or more than ``max_voxels`` voxels in total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctsam.errors import InputDataError
from ctsam.volume import Geometry

FIX = "if this image really is a CT you want processed, widen guards.{key} in the config; else fix or drop the case"


class GuardError(InputDataError):
    """An input failed an input guard (see :mod:`ctsam.guards`)."""


@dataclass(frozen=True)
class GuardSettings:
    """The ``guards`` config section."""

    hu_range: tuple[float, float] = (-2048.0, 32767.0)
    hu_min_at_most: float = -200.0
    hu_max_at_least: float = 0.0
    spacing_mm: tuple[float, float] = (0.05, 10.0)
    size_voxels: tuple[int, int] = (3, 4096)
    max_voxels: int = 1_500_000_000

    @classmethod
    def from_config(cls, config: dict) -> GuardSettings:
        g = config.get("guards") or {}
        d = cls()
        return cls(
            hu_range=tuple(g.get("hu_range", d.hu_range)),  # type: ignore[arg-type]
            hu_min_at_most=float(g.get("hu_min_at_most", d.hu_min_at_most)),
            hu_max_at_least=float(g.get("hu_max_at_least", d.hu_max_at_least)),
            spacing_mm=tuple(g.get("spacing_mm", d.spacing_mm)),  # type: ignore[arg-type]
            size_voxels=tuple(g.get("size_voxels", d.size_voxels)),  # type: ignore[arg-type]
            max_voxels=int(g.get("max_voxels", d.max_voxels)),
        )


def check_geometry(geometry: Geometry, settings: GuardSettings, *, case: str | None = None) -> None:
    """Spacing and grid size within bounds (cheap: run it before reading voxels when possible)."""
    lo, hi = settings.spacing_mm
    for axis, s in zip("xyz", geometry.spacing_xyz_mm):
        if not (np.isfinite(s) and lo <= s <= hi):
            raise GuardError(
                f"voxel spacing along {axis} is outside the accepted range",
                case=case,
                expected=f"{lo:g}..{hi:g} mm on every axis (guards.spacing_mm)",
                found=f"{s:g} mm (spacing x,y,z = {', '.join(f'{v:g}' for v in geometry.spacing_xyz_mm)} mm)",
                fix=FIX.format(key="spacing_mm") + " (spacing in metres or microns is a broken header)",
            )
    nlo, nhi = settings.size_voxels
    shape_xyz = tuple(reversed(geometry.shape_zyx))
    for axis, n in zip("xyz", shape_xyz):
        if not nlo <= n <= nhi:
            raise GuardError(
                f"image size along {axis} is outside the accepted range",
                case=case,
                expected=f"{nlo}..{nhi} voxels on every axis (guards.size_voxels)",
                found=f"{n} voxels (size x,y,z = {' x '.join(str(v) for v in shape_xyz)})",
                fix=FIX.format(key="size_voxels"),
            )
    total = int(np.prod(geometry.shape_zyx, dtype=np.int64))
    if total > settings.max_voxels:
        raise GuardError(
            "image has more voxels than accepted",
            case=case,
            expected=f"at most {settings.max_voxels} voxels (guards.max_voxels)",
            found=f"{total} voxels ({' x '.join(str(v) for v in shape_xyz)})",
            fix=FIX.format(key="max_voxels"),
        )


def check_values(array: np.ndarray, settings: GuardSettings, *, case: str | None = None) -> tuple[float, float]:
    """Finite voxels, inside ``hu_range``, spanning a CT-like range; returns ``(min, max)``."""
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        n_bad = int(array.size - np.count_nonzero(finite))
        if n_bad:
            kinds = []
            if np.isnan(array).any():
                kinds.append("NaN")
            if np.isinf(array).any():
                kinds.append("inf")
            raise GuardError(
                "CT holds non-finite voxel values",
                case=case,
                expected="finite Hounsfield units in every voxel",
                found=f"{n_bad} of {array.size} voxels are {'/'.join(kinds)} ({100.0 * n_bad / array.size:.3g}%)",
                fix="re-export the CT from the scanner or PACS (a NaN/inf image is not a reconstruction)",
            )
    if array.size == 0:
        raise GuardError("CT has no voxels", case=case, expected="a 3-D image", found=f"shape {array.shape}")
    lo, hi = float(array.min()), float(array.max())
    rlo, rhi = settings.hu_range
    if lo < rlo or hi > rhi:
        raise GuardError(
            "CT values are outside the accepted Hounsfield range",
            case=case,
            expected=f"every voxel within {rlo:g}..{rhi:g} HU (guards.hu_range)",
            found=f"values {lo:g}..{hi:g} ({array.dtype})",
            fix="pass a CT in HU (apply the rescale slope/intercept first)",
        )
    if lo > settings.hu_min_at_most or hi < settings.hu_max_at_least:
        raise GuardError(
            "CT value range is implausible for a CT in Hounsfield units",
            case=case,
            expected=(
                f"darkest voxel <= {settings.hu_min_at_most:g} HU (air, lung or fat; guards.hu_min_at_most) and "
                f"brightest >= {settings.hu_max_at_least:g} HU (soft tissue; guards.hu_max_at_least)"
            ),
            found=f"values {lo:g}..{hi:g} ({array.dtype})",
            fix="pass a CT in HU (not a normalised, MR or mask image); "
            + FIX.format(key="hu_min_at_most/hu_max_at_least"),
        )
    return lo, hi


def check_ct(
    array: np.ndarray, geometry: Geometry, settings: GuardSettings, *, case: str | None = None
) -> tuple[float, float]:
    """Every guard on one CT (geometry first, it is cheap); returns the value range."""
    check_geometry(geometry, settings, case=case)
    return check_values(array, settings, case=case)
