"""Losses of the CT-SAM3D recipe: 0.2 x sigmoid focal (alpha 0.8, gamma 2) + 0.8 x soft Dice for the
mask, MSE against a Gaussian heatmap for the cross-patch prompt network.

Every loss is a mean over batch items of a per-item value, so a global batch split evenly across
data-parallel ranks (gradients averaged) gives the same gradient as the whole batch on one rank.
Shapes: logits and targets (B, 1, S, S, S), (z, y, x).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

FOCAL_WEIGHT = 0.2
DICE_WEIGHT = 0.8


def focal_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.8, gamma: float = 2.0) -> torch.Tensor:
    """Per-item sigmoid focal loss (mean over voxels): (B, 1, ...) -> (B,)."""
    target = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Per-item soft Dice loss ``1 - (2 sum(p t) + s) / (sum p + sum t + s)``: (B, 1, ...) -> (B,)."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.to(p.dtype).flatten(1)
    return 1 - (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, *, focal_weight: float = FOCAL_WEIGHT, dice_weight: float = DICE_WEIGHT
) -> torch.Tensor:
    """The published mask loss, averaged over the batch (scalar)."""
    logits = logits.float()
    return (focal_weight * focal_loss(logits, target) + dice_weight * dice_loss(logits, target)).mean()


def gaussian_heatmap(
    points_zyx: list[tuple[int, int, int] | None],
    size: int,
    *,
    sigma: float = 2.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, 1, S, S, S) float32 targets with a unit-peak Gaussian at each point (all zero for None)."""
    r = torch.arange(size, dtype=torch.float32, device=device)
    out = torch.zeros((len(points_zyx), 1, size, size, size), dtype=torch.float32, device=device)
    for i, p in enumerate(points_zyx):
        if p is None:
            continue
        z, y, x = (r - float(p[0])) ** 2, (r - float(p[1])) ** 2, (r - float(p[2])) ** 2
        out[i, 0] = torch.exp(-(z[:, None, None] + y[None, :, None] + x[None, None, :]) / (2 * sigma * sigma))
    return out


def heatmap_loss(heatmap: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-patch loss: per-item MSE between raw heatmap and Gaussian target, mean over valid items.

    ``valid``: (B,) bool, items that have a neighbour pair (others count zero but keep the divisor B,
    so rank splits stay exact).
    """
    per = ((heatmap.float() - target) ** 2).flatten(1).mean(1)
    if valid is not None:
        per = per * valid.to(per.dtype)
    return per.mean()


def dice_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice per item of boolean masks (B, ...) -> (B,); 1 when both are empty."""
    p = pred.flatten(1).float()
    t = target.flatten(1).float()
    inter = (p * t).sum(1)
    denom = p.sum(1) + t.sum(1)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
