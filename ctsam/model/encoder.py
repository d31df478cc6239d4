"""Image encoder: a 3D ResT-v2 (the CT-SAM3D backbone).

Input: a normalised CT patch ``(B, 1, D, H, W)`` indexed (z, y, x), intensities already windowed to
[0, 1]. Output: four feature maps (the decoder's skips), finest first::

    level 0: (B, skip_channels, D/4,  H/4,  W/4)     e.g. 128 @ 16^3 for a 64^3 patch
    level 1: (B, skip_channels, D/8,  H/8,  W/8)     128 @ 8^3
    level 2: (B, skip_channels, D/16, H/16, W/16)    128 @ 4^3
    level 3: (B, out_channels,  D/32, H/32, W/32)    256 @ 2^3

Each stage is a patch embedding (a convolutional stem for stage 0, a 3^3 stride-2 conv otherwise; both
followed by a pixel-attention gate and LayerNorm), ResT-v2 transformer blocks (efficient multi-head
self-attention whose keys/values come from a depth-wise strided-conv reduced map, plus an upsampled
value branch), and a 1x1x1 "channel mapper" conv producing that stage's output. Tokens are the voxels
of the stage grid flattened in (z, y, x) order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

_LN_EPS = 1e-6


class PixelAttentionGate(nn.Module):
    """``x * sigmoid(depthwise_conv3(x))`` on ``(B, C, D, H, W)``; shape preserved."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel_size=3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class ConvStem(nn.Module):
    """Stage-0 embedding: (B, in, D, H, W) -> tokens (B, D/4*H/4*W/4, C) and the grid (D/4, H/4, W/4).

    Two 3^3 stride-2 convs (no bias) each followed by BatchNorm and ReLU (in -> C/2 -> C), a 1x1x1 conv,
    the pixel-attention gate and a LayerNorm over channels.
    """

    def __init__(self, *, in_channels: int, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv3d(in_channels, half, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(half)
        self.conv2 = nn.Conv3d(half, channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(channels)
        self.project = nn.Conv3d(channels, channels, kernel_size=1)
        self.gate = PixelAttentionGate(channels=channels)
        self.norm = nn.LayerNorm(channels, eps=_LN_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.gate(self.project(x))
        grid = tuple(x.shape[2:])
        return self.norm(x.flatten(2).transpose(1, 2)), grid  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """Stage-k embedding (k >= 1): (B, in, D, H, W) -> tokens (B, D/2*H/2*W/2, C) and the grid.

    A 3^3 stride-2 conv (padding 1), the pixel-attention gate and a LayerNorm over channels.
    """

    def __init__(self, *, in_channels: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, channels, kernel_size=3, stride=2, padding=1)
        self.gate = PixelAttentionGate(channels=channels)
        self.norm = nn.LayerNorm(channels, eps=_LN_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x = self.gate(self.proj(x))
        grid = tuple(x.shape[2:])
        return self.norm(x.flatten(2).transpose(1, 2)), grid  # type: ignore[return-value]


class EfficientAttention(nn.Module):
    """ResT-v2 efficient multi-head self-attention on tokens (B, N, C) of a (D, H, W) grid.

    Queries come from every token; keys and values from a map reduced by a depth-wise conv of kernel
    ``r + 1``, stride ``r`` (and a LayerNorm) when ``reduction r > 1``. The value map is upsampled back
    to the grid (trilinear, align_corners=False), LayerNorm-ed and added to the attention output before
    the output projection.
    """

    def __init__(self, *, dim: int, num_heads: int, reduction: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.reduction = reduction
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        if reduction > 1:
            self.sr = nn.Conv3d(
                dim, dim, kernel_size=reduction + 1, stride=reduction, padding=reduction // 2, groups=dim
            )
            self.sr_norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.up_norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, c // h).transpose(1, 2)  # (B, h, N, c/h)
        if self.reduction > 1:
            kv_in = self.sr(x.transpose(1, 2).reshape(b, c, *grid))
            kv_grid = tuple(kv_in.shape[2:])
            kv_in = self.sr_norm(kv_in.flatten(2).transpose(1, 2))
        else:
            kv_in, kv_grid = x, grid
        kv = self.kv(kv_in).reshape(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)  # (2, B, h, Nk, c/h)
        k, v = kv[0], kv[1]
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c/h)) v
        out = out.transpose(1, 2).reshape(b, n, c)
        identity = v.transpose(-1, -2).reshape(b, c, *kv_grid)  # channels head-major
        if kv_grid != grid:
            identity = F.interpolate(identity, size=grid, mode="trilinear", align_corners=False)
        identity = identity.flatten(2).transpose(1, 2)
        return self.proj(out + self.up_norm(identity))


class Mlp(nn.Module):
    """Token MLP: Linear(dim, 4 dim) -> GELU -> Linear(4 dim, dim)."""

    def __init__(self, *, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.fc2 = nn.Linear(ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ResTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1 x); x + mlp(norm2 x). Tokens (B, N, C) in and out."""

    def __init__(self, *, dim: int, num_heads: int, reduction: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = EfficientAttention(dim=dim, num_heads=num_heads, reduction=reduction)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim=dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x))


class EncoderStage(nn.Module):
    """One encoder stage: embedding, transformer blocks and the 1x1x1 output mapper.

    ``forward`` maps (B, C_in, D, H, W) to ``(x, out)``: ``x`` (B, C, D', H', W') feeds the next stage,
    ``out`` (B, out_channels, D', H', W') is this stage's output feature map.
    """

    def __init__(
        self, *, embed: nn.Module, dim: int, depth: int, num_heads: int, reduction: int, out_channels: int
    ) -> None:
        super().__init__()
        self.embed = embed
        self.blocks = nn.ModuleList(ResTBlock(dim=dim, num_heads=num_heads, reduction=reduction) for _ in range(depth))
        self.mapper = nn.Conv3d(dim, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, grid = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens, grid)
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        return x, self.mapper(x)


class ResTV2Encoder(nn.Module):
    """3D ResT-v2 image encoder (see the module docstring for shapes).

    Args:
        in_channels: image channels (1 for CT).
        embed_dims: stage widths, e.g. (96, 192, 384, 768).
        depths: transformer blocks per stage, e.g. (1, 2, 6, 2).
        num_heads: attention heads per stage, e.g. (1, 2, 4, 8).
        reductions: key/value spatial reduction per stage, e.g. (8, 4, 2, 1).
        out_channels: width of the last output; the first three outputs have ``out_channels // 2``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        embed_dims: Sequence[int],
        depths: Sequence[int],
        num_heads: Sequence[int],
        reductions: Sequence[int],
        out_channels: int,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(reductions) == 4:
            raise ValueError("ResTV2Encoder needs exactly 4 stages")
        stages = []
        for i in range(4):
            if i == 0:
                embed: nn.Module = ConvStem(in_channels=in_channels, channels=embed_dims[0])
            else:
                embed = PatchEmbed(in_channels=embed_dims[i - 1], channels=embed_dims[i])
            stages.append(
                EncoderStage(
                    embed=embed,
                    dim=embed_dims[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    reduction=reductions[i],
                    out_channels=out_channels if i == 3 else out_channels // 2,
                )
            )
        self.stages = nn.ModuleList(stages)
        self.out_channels = out_channels

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 1, D, H, W) -> 4 feature maps, finest first (module docstring)."""
        outs = []
        x = image
        for stage in self.stages:
            x, out = stage(x)
            outs.append(out)
        return tuple(outs)
