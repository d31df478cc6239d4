"""Simulated clicks, as used to train and evaluate CT-SAM3D-style interactive models.

* The **first click** is positive, at the most interior point of the target (maximum of the Euclidean
  distance transform, patch border counted as outside); a patch without target gets a negative click
  at its centre.
* Each **correction click** goes to the centre (most interior point) of the largest error region of
  the current binary prediction: positive when that region is a false negative (missed target),
  negative when it is a false positive. Regions are 6-connected components; ties go to the false
  negative, then to the first component in C order. No click is added when the prediction is exact
  or the sequence already holds ``max_points`` clicks (24 in CT-SAM3D training).

Everything is deterministic. Arrays are (S, S, S) indexed (z, y, x); the network takes (x, y, z)
patch voxels, see :meth:`ClickSequence.tensors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ctsam.seed.seeding import interior_point

MAX_POINTS = 24


@dataclass
class ClickSequence:
    """Clicks of one prompt set: (z, y, x) patch voxels and their polarity (True = positive)."""

    points_zyx: list[tuple[int, int, int]] = field(default_factory=list)
    positive: list[bool] = field(default_factory=list)

    def add(self, zyx: tuple[int, int, int], positive: bool) -> None:
        self.points_zyx.append(tuple(int(v) for v in zyx))  # type: ignore[arg-type]
        self.positive.append(bool(positive))

    def __len__(self) -> int:
        return len(self.points_zyx)

    @staticmethod
    def tensors(seqs: list[ClickSequence]):
        """(B, N, 3) int64 (x, y, z) clicks and (B, N) int64 labels (1, 0, -1 padding) for a batch."""
        import torch

        n = max(1, max(len(s) for s in seqs))
        pts = torch.zeros((len(seqs), n, 3), dtype=torch.int64)
        lab = torch.full((len(seqs), n), -1, dtype=torch.int64)
        for i, s in enumerate(seqs):
            for j, (zyx, pos) in enumerate(zip(s.points_zyx, s.positive)):
                pts[i, j] = torch.tensor([zyx[2], zyx[1], zyx[0]])
                lab[i, j] = 1 if pos else 0
        return pts, lab


def first_click(target: np.ndarray) -> tuple[tuple[int, int, int], bool]:
    """(zyx, positive) of the first click for a target mask (see the module docstring)."""
    target = np.asarray(target, dtype=bool)
    if not target.any():
        return tuple(s // 2 for s in target.shape), False  # type: ignore[return-value]
    return interior_point(target, (1.0, 1.0, 1.0)), True


def error_click(pred: np.ndarray, target: np.ndarray) -> tuple[tuple[int, int, int], bool] | None:
    """(zyx, positive) at the centre of the largest error region, or None when ``pred == target``."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    best = None
    for positive, err in ((True, target & ~pred), (False, pred & ~target)):
        if not err.any():
            continue
        comps, n = ndimage.label(err)
        sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), positive, comps, k + 1)
    if best is None:
        return None
    _, positive, comps, k = best
    return interior_point(comps == k, (1.0, 1.0, 1.0)), positive


def start_sequences(targets: list[np.ndarray]) -> list[ClickSequence]:
    """One sequence per target holding its first click."""
    out = []
    for t in targets:
        s = ClickSequence()
        s.add(*first_click(t))
        out.append(s)
    return out


def add_correction_clicks(
    seqs: list[ClickSequence], preds: list[np.ndarray], targets: list[np.ndarray], *, max_points: int = MAX_POINTS
) -> int:
    """Add one correction click per sequence (where an error exists and room is left); returns how many."""
    added = 0
    for s, p, t in zip(seqs, preds, targets):
        if len(s) >= max_points:
            continue
        c = error_click(p, t)
        if c is not None:
            s.add(*c)
            added += 1
    return added


def start_prompts(targets: list[np.ndarray], coarse: list[np.ndarray | None] | None, device, channels_last: bool):
    """First clicks and starting mask prompt of a batch: from the coarse mask where a patch has one
    (click at its most interior point, the mask as prompt), else from the target (prompt zeros).
    Returns ``(sequences, prev)`` with ``prev`` None when no patch has a coarse mask."""
    coarse = list(coarse) if coarse is not None else [None] * len(targets)
    seqs = start_sequences([c if c is not None else t for t, c in zip(targets, coarse)])
    if all(c is None for c in coarse):
        return seqs, None
    prev = stack_patches(
        [c.astype(np.float32) if c is not None else np.zeros(t.shape, np.float32) for t, c in zip(targets, coarse)],
        device,
        channels_last,
    )
    return seqs, prev


def stack_patches(arrays: list[np.ndarray], device, channels_last: bool):
    """(N, 1, S, S, S) float32 tensor of N patches on ``device`` (channels-last 3-D when asked)."""
    import torch

    t = torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32)).to(device)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last_3d)
    return t
