"""SPADE mask decoder with prompt injection at every level, and the quality head.

Prompt (B, 3, S, S, S) = [previous mask, positive clicks, negative clicks] at patch resolution S = 64,
(z, y, x). Encoder features (finest first, as :class:`~ctsam.model.encoder.ResTV2Encoder` returns
them, for width W = 256 in ``restv2_tiny``)::

    level | input               | PSAP block | upsample -> | then
    0     | stage-3 map, W @ 2^3 | W          | W/2 @ 4^3   | concat stage-2 skip (W/2) -> W
    1     | W @ 4^3              | W          | W/2 @ 8^3   | concat stage-1 skip -> W
    2     | W @ 8^3              | W          | W/2 @ 16^3  | concat stage-0 skip -> W
    3     | W @ 16^3             | W          | W/2 @ 32^3  | -
    4     | W/2 @ 32^3           | W/2        | W/4 @ 64^3  | mask head (3^3 conv -> 2 logits)

A PSAP block is ``x + conv1(lrelu(spade1(conv0(lrelu(spade0(x, p))), p)))`` with SPADE
``instance_norm(x) * (1 + gamma(p)) + beta(p)``; the prompt is resized trilinearly
(align_corners=False) to the level grid once and shared by both SPADE layers of the level.

Batching: encoder features may have batch 1 while the prompt has batch B; everything broadcasts (the
level-0 input and the skips are never copied B times except inside the concatenations).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of (B, C, D, H, W) (biased variance, eps inside the root)."""

    def __init__(self, *, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None, None] + self.bias[:, None, None, None]


class SpadeModulation(nn.Module):
    """SPADE: (B|1, C, d, h, w) features and (B, P, d, h, w) prompt at that grid -> (B, C, d, h, w).

    ``instance_norm(x)`` (no affine, eps 1e-5) ``* (1 + gamma) + beta`` where
    ``a = relu(conv3(prompt))`` (P -> hidden), ``gamma = conv3(a)``, ``beta = conv3(a)`` (hidden -> C).
    """

    def __init__(self, *, channels: int, prompt_channels: int, hidden: int) -> None:
        super().__init__()
        self.shared = nn.Conv3d(prompt_channels, hidden, kernel_size=3, padding=1)
        self.gamma = nn.Conv3d(hidden, channels, kernel_size=3, padding=1)
        self.beta = nn.Conv3d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        a = F.relu(self.shared(prompt))
        return torch.addcmul(self.beta(a), normalized, 1 + self.gamma(a))


class PsapBlock(nn.Module):
    """Prompt-modulated residual block: (B|1, C, ...) and prompt (B, P, ...) -> (B, C, ...)."""

    def __init__(self, *, channels: int, prompt_channels: int, hidden: int) -> None:
        super().__init__()
        self.norm_0 = SpadeModulation(channels=channels, prompt_channels=prompt_channels, hidden=hidden)
        self.conv_0 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm_1 = SpadeModulation(channels=channels, prompt_channels=prompt_channels, hidden=hidden)
        self.conv_1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, prompt), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, prompt), 0.2))
        return x + dx


class Upsample(nn.Module):
    """2^3 stride-2 transposed conv + channel LayerNorm + GELU: (B, C, d, h, w) -> (B, C_out, 2d, 2h, 2w)."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.norm = LayerNorm3d(channels=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(x)))


class DecoderLevel(nn.Module):
    """One decoder level: PSAP block at ``channels``, then upsample to ``out_channels``."""

    def __init__(self, *, channels: int, out_channels: int, prompt_channels: int, hidden: int) -> None:
        super().__init__()
        self.block = PsapBlock(channels=channels, prompt_channels=prompt_channels, hidden=hidden)
        self.up = Upsample(in_channels=channels, out_channels=out_channels)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return self.up(self.block(x, prompt))


class SpadeMaskDecoder(nn.Module):
    """Prompted mask decoder (table in the module docstring).

    Args:
        width: decoder width W (the encoder's last output width; the skips have W/2).
        prompt_channels: prompt channels (3: previous mask, positive, negative).
        hidden: SPADE hidden width (128 in CT-SAM3D).
        num_masks: mask-head output channels (2 in CT-SAM3D; channel 0 is the single-mask output).
    """

    num_skip_levels = 3

    def __init__(self, *, width: int, prompt_channels: int = 3, hidden: int = 128, num_masks: int = 2) -> None:
        super().__init__()
        half, quarter = width // 2, width // 4
        widths = [(width, half)] * 4 + [(half, quarter)]
        self.levels = nn.ModuleList(
            DecoderLevel(channels=c, out_channels=o, prompt_channels=prompt_channels, hidden=hidden) for c, o in widths
        )
        self.mask_head = nn.Conv3d(quarter, num_masks, kernel_size=3, padding=1)
        self.out_channels = quarter

    def forward(self, features: Sequence[torch.Tensor], prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode.

        Args:
            features: the 4 encoder maps, finest first, batch 1 or B.
            prompt: (B, 3, S, S, S) prompt.

        Returns:
            logits (B, num_masks, S, S, S) before any sigmoid, and the last feature map
            (B, W/4, S, S, S) that feeds the quality head.
        """
        x = features[-1]
        resized: dict[tuple[int, ...], torch.Tensor] = {}
        for i, level in enumerate(self.levels):
            grid = tuple(x.shape[2:])
            if grid not in resized:
                resized[grid] = F.interpolate(prompt, size=grid, mode="trilinear", align_corners=False)
            x = level(x, resized[grid])
            if i < self.num_skip_levels:
                skip = features[-2 - i]
                batch = max(x.shape[0], skip.shape[0])
                x = torch.cat([x.expand(batch, *x.shape[1:]), skip.expand(batch, *skip.shape[1:])], dim=1)
        return self.mask_head(x), x


class QualityHead(nn.Module):
    """Mask-quality scores: (B, C, d, h, w) -> global average pool -> MLP (C -> hidden -> hidden -> n).

    ReLU between layers, no output activation (raw scores; CT-SAM3D uses score 0 in single-mask mode).
    """

    def __init__(self, *, in_channels: int, hidden: int = 256, num_outputs: int = 2, depth: int = 3) -> None:
        super().__init__()
        dims = [in_channels] + [hidden] * (depth - 1) + [num_outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(2, 3, 4))
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
