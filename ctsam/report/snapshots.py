"""Overlay snapshots: axial, coronal and sagittal CT slices with label colours and a legend (PNG).

Views are shown in radiological convention, whatever the stored orientation: axial with anterior
at the top and the patient's right on the image left; coronal and sagittal with superior at the
top (sagittal: anterior on the left). Pixel aspect follows the voxel spacing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ctsam.io.labeltable import label_color_rgb
from ctsam.volume import Geometry

WINDOW_CENTER_HU = 40.0
WINDOW_WIDTH_HU = 400.0
ALPHA = 0.45
MAX_LEGEND = 18
OUTLINE_COLOR = "#ffef00"


@dataclass(frozen=True)
class LpsView:
    """A (z, y, x) view of a volume with x -> patient left, y -> posterior, z -> superior.

    ``array`` is a view (no copy) of the stored array; ``spacing_zyx_mm`` its voxel size.
    ``index_of`` maps a canonical (z, y, x) index back to the stored (z, y, x) index.
    """

    array: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]


def lps_view(array: np.ndarray, geometry: Geometry) -> LpsView:
    """Reorder and flip the axes of a (z, y, x) array so they follow LPS (nearest axis per index axis)."""
    d = geometry.direction_matrix  # column c = world direction of index axis c (x, y, z)
    world_of_index = [int(np.argmax(np.abs(d[:, c]))) for c in range(3)]
    if sorted(world_of_index) != [0, 1, 2]:
        raise ValueError(f"direction matrix is too oblique to display: {geometry.describe()}")
    sign_of_index = [float(np.sign(d[world_of_index[c], c])) for c in range(3)]
    # canonical axis k (0 = z/S, 1 = y/P, 2 = x/L) <- world axis 2 - k <- index axis c <- array axis 2 - c
    perm, flips, spacing = [], [], []
    for k in range(3):
        w = 2 - k
        c = world_of_index.index(w)
        perm.append(2 - c)
        flips.append(sign_of_index[c] < 0)
        spacing.append(geometry.spacing_xyz_mm[c])
    view = np.transpose(array, perm)
    for k, f in enumerate(flips):
        if f:
            view = np.flip(view, axis=k)
    return LpsView(view, tuple(spacing), tuple(perm), tuple(flips))  # type: ignore[arg-type]


def world_to_canonical_index(world_xyz: np.ndarray, geometry: Geometry, view: LpsView) -> tuple[int, int, int]:
    """LPS world point -> nearest (z, y, x) index of the canonical view, clipped to the grid."""
    idx_xyz = geometry.world_to_index(np.asarray(world_xyz, dtype=float))
    arr_idx = idx_xyz[::-1]  # stored (z, y, x)
    out = []
    for k in range(3):
        a = view.perm[k]
        n = view.array.shape[k]
        v = int(round(float(arr_idx[a])))
        if view.flips[k]:
            v = n - 1 - v
        out.append(min(max(v, 0), n - 1))
    return tuple(out)  # type: ignore[return-value]


def _window(ct: np.ndarray) -> np.ndarray:
    lo = WINDOW_CENTER_HU - WINDOW_WIDTH_HU / 2
    return np.clip((ct.astype(np.float32) - lo) / WINDOW_WIDTH_HU, 0.0, 1.0)


def _overlay(ct2d: np.ndarray, lab2d: np.ndarray, lut: np.ndarray) -> np.ndarray:
    gray = _window(ct2d)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    m = lab2d > 0
    if m.any():
        rgb[m] = (1 - ALPHA) * rgb[m] + ALPHA * lut[lab2d[m]]
    return rgb


def _outline(ax, mask2d: np.ndarray, extent: tuple, origin: str) -> None:
    """Draw the boundary of ``mask2d`` along voxel edges, in :data:`OUTLINE_COLOR`, on an ``imshow`` axis.

    ``extent``/``origin`` are those given to ``imshow``: row r of the image covers [r, r + 1) voxel
    units from the top (``upper``) or the bottom (``lower``) edge of the extent.
    """
    if not mask2d.any():
        return
    ny, nx = mask2d.shape
    x0, x1, y0, y1 = extent
    x_step = (x1 - x0) / nx
    y_base, y_step = (y1, (y0 - y1) / ny) if origin == "upper" else (y0, (y1 - y0) / ny)
    k = 4  # the level-0.5 contour of a 4x upsampled, 1-voxel padded mask follows the voxel edges
    up = np.kron(np.pad(mask2d.astype(np.float32), 1), np.ones((k, k), np.float32))
    u_cols = (np.arange(up.shape[1]) + 0.5) / k - 1.0
    u_rows = (np.arange(up.shape[0]) + 0.5) / k - 1.0
    ax.contour(x0 + u_cols * x_step, y_base + u_rows * y_step, up, levels=[0.5], colors=[OUTLINE_COLOR], linewidths=1.6)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def render_snapshot(
    ct: np.ndarray,
    labels: np.ndarray,
    geometry: Geometry,
    label_names: dict[int, str],
    *,
    focus_world_xyz: np.ndarray | None = None,
    title: str = "",
    dpi: int = 96,
    outline_label: int | None = None,
) -> bytes:
    """PNG bytes: three orthogonal slices through ``focus_world_xyz`` (default: volume centre).

    Args:
        ct: (z, y, x) HU array; labels: (z, y, x) integer label array on the same grid.
        label_names: ``{index: name}`` for the legend.
        focus_world_xyz: LPS world point (mm) the three slices pass through.
        outline_label: a label drawn with a bright outline on top of the overlay (the flagged
            structure the report points at); its legend entry says "outlined".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cv, lv = lps_view(ct, geometry), lps_view(labels, geometry)
    if focus_world_xyz is None:
        k, j, i = (n // 2 for n in cv.array.shape)
    else:
        k, j, i = world_to_canonical_index(focus_world_xyz, geometry, cv)
    sz, sy, sx = cv.spacing_zyx_mm
    nz, ny, nx = cv.array.shape
    max_label = int(max(label_names, default=0))
    lut = np.zeros((max(max_label, int(labels.max(initial=0))) + 1, 3), dtype=np.float32)
    for idx in range(1, lut.shape[0]):
        lut[idx] = np.asarray(label_color_rgb(idx), dtype=np.float32) / 255.0

    # (2-D slice arrays, extent, x label, y label); origin "lower" puts superior at the top for
    # coronal/sagittal, and the axial rows (anterior first) are shown top-down with origin "upper".
    panels = [
        ("axial", cv.array[k], lv.array[k], (0, nx * sx, ny * sy, 0), "upper", "R ← → L", "A ↑ ↓ P"),
        ("coronal", cv.array[:, j, :], lv.array[:, j, :], (0, nx * sx, 0, nz * sz), "lower", "R ← → L", "S ↑ ↓ I"),
        ("sagittal", cv.array[:, :, i], lv.array[:, :, i], (0, ny * sy, 0, nz * sz), "lower", "A ← → P", "S ↑ ↓ I"),
    ]
    seen: dict[int, int] = {}
    for panel in panels:
        vals, counts = np.unique(np.asarray(panel[2]), return_counts=True)
        for v, n in zip(vals, counts):
            if v:
                seen[int(v)] = seen.get(int(v), 0) + int(n)
    top = sorted(seen, key=lambda v: (-seen[v], v))[:MAX_LEGEND]
    # height: the tallest panel at ~3.4 in wide, and room for the legend entries
    ratios = [abs((e[2] - e[3]) / (e[1] - e[0])) for e in (p[3] for p in panels)]
    height_in = float(np.clip(max(3.4 * max(ratios) + 1.0, 1.3 + 0.2 * len(top)), 3.0, 7.0))
    fig, axes = plt.subplots(
        1, 4, figsize=(13.0, height_in), dpi=dpi, gridspec_kw={"width_ratios": [1, 1, 1, 0.62]}, constrained_layout=True
    )
    for ax, (name, c2, l2, extent, origin, xl, yl) in zip(axes[:3], panels):
        ax.imshow(_overlay(np.asarray(c2), np.asarray(l2), lut), extent=extent, origin=origin, interpolation="nearest")
        if outline_label is not None:
            _outline(ax, np.asarray(l2) == outline_label, extent, origin)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel(xl, fontsize=9)
        ax.set_ylabel(yl, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    legend_ax = axes[3]
    legend_ax.axis("off")
    if outline_label is not None and outline_label not in top and outline_label in seen:
        top = top[: MAX_LEGEND - 1] + [outline_label]
    handles = [
        Patch(
            facecolor=lut[v],
            edgecolor=OUTLINE_COLOR if v == outline_label else "none",
            linewidth=2.0 if v == outline_label else 0.0,
            label=label_names.get(v, f"label_{v}") + (" (outlined)" if v == outline_label else ""),
        )
        for v in sorted(top)
    ]
    if handles:
        extra = len(seen) - len(top)
        legend_ax.legend(
            handles=handles,
            loc="upper left",
            fontsize=9,
            frameon=False,
            title="labels in view" + (f" (+{extra} more)" if extra > 0 else ""),
            title_fontsize=9,
        )
    else:
        legend_ax.text(0, 1, "no labels in these slices", va="top", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
