"""Click-map prompt encoder (no learnable parameters).

Clicks become two dense Gaussian maps at patch resolution, exactly as the published CT-SAM3D
``PromptEncoderClickmap`` computes them:

* each click writes ``exp(-d^2 / (2 sigma^2))`` (sigma = 2 voxels, peak 1, not normalised to unit
  sum) on a 17^3 kernel (radius 8); kernel values below ``eps(float32) * max`` are set to 0;
* coordinates are (x, y, z) patch voxels: x indexes the last array axis, z the first; they are
  truncated toward zero to integers;
* the write window is clipped at the patch border: per axis ``[v - min(v, 8), v + min(size - v, 9))``;
* each click *assigns* its whole clipped window, in point order: later clicks overwrite earlier ones
  (no sum, no max);
* label 1 -> positive map, label -1 -> ignored (padding), any other label -> negative map;
* each map is min-max normalised over the whole batch tensor when it is not all zero. With a peak of 1
  and at least one zero voxel this is the identity, so batching prompt sets never changes a map.

The decoder's prompt is three channels at patch resolution: [previous mask, positive map, negative map].
"""

from __future__ import annotations

import torch
from torch import nn

SIGMA_VOXELS = 2
RADIUS_VOXELS = 8


def gaussian_kernel(
    *, radius: int = RADIUS_VOXELS, sigma: int | float = SIGMA_VOXELS, device: torch.device | str | None = None
) -> torch.Tensor:
    """Isotropic Gaussian (2r+1)^3 kernel, float32, peak 1 at the centre; tiny values zeroed."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    x, y, z = r.view(-1, 1, 1), r.view(1, -1, 1), r.view(1, 1, -1)
    h = (-(x * x + y * y + z * z) / (2 * sigma * sigma)).exp()
    h[h < torch.finfo(h.dtype).eps * h.max()] = 0
    return h


def _normalise_whole_batch(m: torch.Tensor) -> torch.Tensor:
    if not bool(m.any()):
        return m
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo)


def click_maps(
    points_xyz: torch.Tensor, point_labels: torch.Tensor, size: int = 64, *, kernel: torch.Tensor | None = None
) -> torch.Tensor:
    """Gaussian click maps for B prompt sets.

    Args:
        points_xyz: (B, N, 3) click coordinates as (x, y, z) patch voxels, any real dtype; each valid
            click must lie in [0, size) on every axis after truncation toward zero.
        point_labels: (B, N) integer labels: 1 positive, -1 padding (ignored), anything else negative.
        size: patch side in voxels (the patch is a cube).
        kernel: optional precomputed :func:`gaussian_kernel` (for speed).

    Returns:
        (B, 2, size, size, size) float32 on the points' device, indexed (z, y, x); channel 0 the
        positive map, channel 1 the negative map.

    Raises:
        ValueError: on mismatched shapes or a valid click outside the patch.
    """
    if points_xyz.ndim != 3 or points_xyz.shape[-1] != 3:
        raise ValueError(f"points_xyz must be (B, N, 3) (x, y, z), got {tuple(points_xyz.shape)}")
    if tuple(point_labels.shape) != tuple(points_xyz.shape[:2]):
        raise ValueError(
            f"point_labels must be (B, N) = {tuple(points_xyz.shape[:2])}, got {tuple(point_labels.shape)}"
        )
    device = points_xyz.device
    b, n = points_xyz.shape[:2]
    radius = RADIUS_VOXELS
    if kernel is None:
        kernel = gaussian_kernel(radius=radius, device=device)
    maps = torch.zeros((b, 2, size, size, size), dtype=torch.float32, device=device)
    coords = points_xyz.detach().to("cpu").long().tolist()  # truncation toward zero, like .long()
    labels = point_labels.detach().to("cpu").long().tolist()
    for i in range(b):
        for j in range(n):
            label = labels[i][j]
            if label == -1:
                continue
            vx, vy, vz = coords[i][j]
            if not (0 <= vx < size and 0 <= vy < size and 0 <= vz < size):
                raise ValueError(
                    f"click {j} of prompt set {i} at (x, y, z) = {tuple(points_xyz[i, j].tolist())} "
                    f"lies outside the {size}^3 patch"
                )
            channel = 0 if label == 1 else 1
            lo = [min(v, radius) for v in (vz, vy, vx)]
            hi = [min(size - v, radius + 1) for v in (vz, vy, vx)]
            maps[i, channel, vz - lo[0] : vz + hi[0], vy - lo[1] : vy + hi[1], vx - lo[2] : vx + hi[2]] = kernel[
                radius - lo[0] : radius + hi[0], radius - lo[1] : radius + hi[1], radius - lo[2] : radius + hi[2]
            ]
    pos = _normalise_whole_batch(maps[:, 0:1])
    neg = _normalise_whole_batch(maps[:, 1:2])
    return torch.cat([pos, neg], dim=1)


class ClickMapPromptEncoder(nn.Module):
    """Builds the decoder's 3-channel prompt from clicks and the previous mask. No parameters.

    Args:
        patch_size: patch side in voxels (64 for CT-SAM3D).
    """

    def __init__(self, *, patch_size: int = 64) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(
        self, points_xyz: torch.Tensor, point_labels: torch.Tensor, prev_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, N, 3) clicks, (B, N) labels, optional (B, 1, S, S, S) previous probabilities ->
        (B, 3, S, S, S) prompt [previous mask, positive map, negative map], float32, (z, y, x)."""
        s = self.patch_size
        maps = click_maps(points_xyz, point_labels, size=s)
        b = maps.shape[0]
        if prev_mask is None:
            prev = maps.new_zeros((b, 1, s, s, s))
        else:
            if tuple(prev_mask.shape) != (b, 1, s, s, s):
                raise ValueError(f"prev_mask must be (B, 1, {s}, {s}, {s}) with B = {b}, got {tuple(prev_mask.shape)}")
            prev = prev_mask.to(device=maps.device, dtype=maps.dtype)
        return torch.cat([prev, maps], dim=1)
