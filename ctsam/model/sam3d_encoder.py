"""3DSAM-adapter image encoder: SAM's ViT made 3D with spatial adapters (``ImageEncoderViT_3d_v2``).

Written from the published code (med-air/3DSAM-adapter ``modeling/image_encoder.py``); state-dict
names are the published ones, so a published ``encoder_dict`` loads key for key.

Token grid: the input is a stack of D upsampled 2D slices (D, 3, U, U); SAM's 16x16 patch embedding
turns each slice into a (U/16)^2 grid, and a depth-wise Conv3d (``slice_embed``) folds every
``num_slice`` slices into one token slice. Tokens are laid out (B, h, w, d, C) exactly as published.

Memory: :meth:`ImageEncoderViT3d.embed_volume` upsamples and embeds one token slice at a time (the
published code materialises the (3, 512, 512, 512) upsampled volume and (512, 768, 32, 32) patch
embeddings, about 3 GB); attention is computed a few windows at a time. Both give the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: windows per attention chunk (64 windows x 12 heads x 512^2 scores would be 0.8 GB at once).
ATTENTION_WINDOW_CHUNK = 8


class Adapter(nn.Module):
    """Bottleneck adapter with a depth-wise 3D conv (published ``Adapter``); input (B, h, w, d, C)."""

    def __init__(self, input_dim: int, mid_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(input_dim, mid_dim)
        self.conv = nn.Conv3d(mid_dim, mid_dim, kernel_size=3, padding=1, groups=mid_dim)
        self.linear2 = nn.Linear(mid_dim, input_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.linear1(features))
        out = self.conv(out.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
        out = F.relu(self.linear2(F.relu(out)))
        return features + out


class LayerNorm3d(nn.Module):
    """Channel LayerNorm over (B, C, h, w, d) (published ``LayerNorm3d``, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class MLPBlock(nn.Module):
    """SAM's ``MLPBlock``: lin1 -> activation -> lin2."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class PatchEmbed(nn.Module):
    """SAM's ``PatchEmbed``: (B, 3, U, U) -> (B, U/p, U/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(B, H, W, D, C) -> (B * nW, ws, ws, ws, C) cubic windows (zero padding when needed)."""
    b, h, w, d, c = x.shape
    pad_h, pad_w, pad_d = ((window_size - s % window_size) % window_size for s in (h, w, d))
    if pad_h or pad_w or pad_d:
        x = F.pad(x, (0, 0, 0, pad_d, 0, pad_w, 0, pad_h))
    hp, wp, dp = h + pad_h, w + pad_w, d + pad_d
    ws = window_size
    x = x.view(b, hp // ws, ws, wp // ws, ws, dp // ws, ws, c)
    windows = x.permute(0, 1, 3, 5, 2, 4, 6, 7).contiguous().view(-1, ws, ws, ws, c)
    return windows, (hp, wp, dp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hwd: tuple[int, int, int], hwd: tuple[int, int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition` (published axis order, padding removed)."""
    hp, wp, dp = pad_hwd
    h, w, d = hwd
    ws = window_size
    b = windows.shape[0] // (hp * wp * dp // ws // ws // ws)
    x = windows.view(b, hp // ws, wp // ws, dp // ws, ws, ws, ws, -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).contiguous().view(b, hp, wp, dp, -1)
    if hp > h or wp > w or dp > d:
        x = x[:, :h, :w, :d, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position rows for every (query, key) pair, the table linearly resized when needed (SAM)."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        resized = resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        resized = rel_pos
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return resized[relative.long()]


class Attention3d(nn.Module):
    """Multi-head attention over cubic windows with decomposed 3D relative positions (published
    ``Attention_3d``; ``lr`` scales the relative-position terms)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, rel_pos_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, head_dim))
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, head_dim))
        self.lr = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, window_offset: int = 0) -> torch.Tensor:
        """x: (nW, h, w, d, C) windows; mask: (nW_total, N, N) or None; ``window_offset``: index of
        x's first window among all windows of one image (selects the mask rows)."""
        b, h, w, d, _ = x.shape
        n = h * w * d
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q_sub = q.reshape(b * self.num_heads, n, -1)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        del qkv, k
        rh = get_rel_pos(h, h, self.rel_pos_h)
        rw = get_rel_pos(w, w, self.rel_pos_w)
        rd = get_rel_pos(d, d, self.rel_pos_d)
        r_q = q_sub.reshape(b * self.num_heads, h, w, d, -1)
        rel_h = torch.einsum("bhwdc,hkc->bhwdk", r_q, rh)
        rel_w = torch.einsum("bhwdc,wkc->bhwdk", r_q, rw)
        rel_d = torch.einsum("bhwdc,dkc->bhwdk", r_q, rd)
        attn = (
            attn.view(b * self.num_heads, h, w, d, h, w, d)
            + self.lr * rel_h[:, :, :, :, :, None, None]
            + self.lr * rel_w[:, :, :, :, None, :, None]
            + self.lr * rel_d[:, :, :, :, None, None, :]
        ).view(b, self.num_heads, n, n)
        del rel_h, rel_w, rel_d
        if mask is not None:
            n_win = mask.shape[0]
            rows = (torch.arange(b, device=mask.device) + window_offset) % n_win
            attn = attn + mask[rows].unsqueeze(1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(b, self.num_heads, h, w, d, -1).permute(0, 2, 3, 4, 1, 5).reshape(b, h, w, d, -1)
        return self.proj(x)


def shifted_window_mask(grid: int, window_size: int, shift: int) -> torch.Tensor:
    """The published attention mask of a shifted-window block: (nW, ws^3, ws^3), 0 or -100."""
    img_mask = torch.zeros((1, grid, grid, grid, 1))
    cuts = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    cnt = 0
    for hs in cuts:
        for ws_ in cuts:
            for ds in cuts:
                img_mask[:, hs, ws_, ds, :] = cnt
                cnt += 1
    windows = window_partition(img_mask, window_size)[0].view(-1, window_size**3)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class Block3d(nn.Module):
    """Adapter, then (shifted) cubic-window attention, then MLP (published ``Block_3d``)."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        rel_pos_size: int,
        shift: int,
        grid: int,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention3d(dim, num_heads, qkv_bias, rel_pos_size)
        self.shift_size = shift
        self.register_buffer("attn_mask", shifted_window_mask(grid, window_size, shift) if shift > 0 else None)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size
        self.adapter = Adapter(dim, dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.adapter(x)
        shortcut = x
        x = self.norm1(x)
        h, w, d = x.shape[1], x.shape[2], x.shape[3]
        s = self.shift_size
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s, -s), dims=(1, 2, 3))
        windows, pad_hwd = window_partition(x, self.window_size)
        del x
        step = ATTENTION_WINDOW_CHUNK
        out = torch.cat([self.attn(windows[i : i + step], self.attn_mask, i) for i in range(0, windows.shape[0], step)])
        del windows
        x = window_unpartition(out, self.window_size, pad_hwd, (h, w, d))
        if s > 0:
            x = torch.roll(x, shifts=(s, s, s), dims=(1, 2, 3))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT3d(nn.Module):
    """The published ``ImageEncoderViT_3d_v2`` (names and arithmetic), sizes from arguments.

    Args:
        img_size: SAM's pre-training image size (the absolute position table is img_size/patch_size
            square, average-pooled to the token grid at run time).
        upsample_size: side U of the upsampled slices (512 published); token grid = U / patch_size.
        num_slice: upsampled slices folded into one token slice; token depth = U / num_slice.
        window_size: SAM's window size (only sets the relative-position table size of windowed blocks).
        cubic_window_size: side of the 3D attention windows (shift half of it on even blocks).
        global_attn_indexes: blocks whose relative-position table is sized for the whole SAM grid.
        feature_blocks: block counts after which a neck output is taken (the published 3, 6, 9); the
            last neck always takes the final block.
    """

    def __init__(
        self,
        *,
        img_size: int,
        upsample_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        out_chans: int,
        window_size: int,
        cubic_window_size: int,
        global_attn_indexes: tuple[int, ...],
        num_slice: int,
        feature_blocks: tuple[int, int, int],
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.grid = upsample_size // patch_size
        self.token_depth = upsample_size // num_slice
        if self.grid != self.token_depth or (img_size // patch_size) % self.grid:
            raise ValueError("token grid must be cubic and divide SAM's position table")
        self.upsample_size = upsample_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.num_slice = num_slice
        self.slice_embed = nn.Conv3d(
            embed_dim, embed_dim, kernel_size=(1, 1, num_slice), stride=(1, 1, num_slice), groups=embed_dim
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, img_size // patch_size, img_size // patch_size, embed_dim))
        self.depth_embed = nn.Parameter(torch.ones(1, self.token_depth, embed_dim))
        self.pos_pool = (img_size // patch_size) // self.grid
        self.blocks = nn.ModuleList(
            Block3d(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                window_size=cubic_window_size,
                rel_pos_size=window_size if i not in global_attn_indexes else img_size // patch_size,
                shift=cubic_window_size // 2 if i % 2 == 0 else 0,
                grid=self.grid,
            )
            for i in range(depth)
        )
        self.neck_3d = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(embed_dim, out_chans, 1, bias=False),
                LayerNorm3d(out_chans),
                nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
                LayerNorm3d(out_chans),
            )
            for _ in range(4)
        )
        self.feature_blocks = tuple(feature_blocks)

    # ---------------------------------------------------------------- embedding
    def _patch_embed_grad(self) -> bool:
        """The published code runs SAM's (frozen) patch embedding under ``no_grad``; when the patch
        embedding is trainable (recipe ``full``, e.g. a model trained from random weights) it gets its
        gradient. Same numbers either way."""
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.patch_embed.parameters())

    def embed_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """Published path: (D, 3, U, U) upsampled slices -> (1, g, g, D/num_slice, C) tokens."""
        with torch.set_grad_enabled(self._patch_embed_grad()):
            x = self.patch_embed(slices)
        x = self.slice_embed(x.permute(3, 1, 2, 0).unsqueeze(0))
        return x.permute(0, 2, 3, 4, 1)

    def embed_volume(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 1, P, P, P) patch (d, h, w) -> (1, g, g, g, C) tokens, the same numbers as upsampling the
        whole 3-channel patch trilinearly by U/P and calling :meth:`embed_slices`, one token slice at a
        time (bounded memory)."""
        p = image.shape[-1]
        u = self.upsample_size
        scale = u / p
        ns = self.num_slice
        if u % p:
            up = F.interpolate(image.float(), scale_factor=scale, mode="trilinear")
            return self.embed_slices(up[0].expand(3, -1, -1, -1).transpose(0, 1))
        s = u // p
        tokens = []
        for k in range(self.token_depth):
            o0, o1 = k * ns, (k + 1) * ns  # upsampled slices of this token slice
            a = max(0, o0 // s - 1)
            b = min(p, -(-o1 // s) + 1)
            up = F.interpolate(image[:, :, a:b].float(), scale_factor=scale, mode="trilinear")
            local = up[0, :, o0 - a * s : o1 - a * s]  # (1, ns, U, U)
            del up
            slices = local.expand(3, -1, -1, -1).transpose(0, 1)  # (ns, 3, U, U)
            with torch.set_grad_enabled(self._patch_embed_grad()):
                x = self.patch_embed(slices)  # (ns, g, g, C)
            tokens.append(self.slice_embed(x.permute(3, 1, 2, 0).unsqueeze(0)))
            del x, slices, local
        return torch.cat(tokens, dim=-1).permute(0, 2, 3, 4, 1)

    def position(self) -> torch.Tensor:
        """(1, g, g, g, C): pooled SAM position table + learned depth embedding."""
        pos = F.avg_pool2d(self.pos_embed.permute(0, 3, 1, 2), kernel_size=self.pos_pool).permute(0, 2, 3, 1)
        return pos.unsqueeze(3) + self.depth_embed.unsqueeze(1).unsqueeze(1)

    # ---------------------------------------------------------------- forward
    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(1, g, g, g, C) embedded tokens -> (deepest neck feature, [3 intermediate neck features]),
        each (1, out_chans, g, g, g) in (h, w, d) order."""
        x = x + self.position()
        features = []
        for idx, blk in enumerate(self.blocks, start=1):
            x = blk(x)
            if idx in self.feature_blocks:
                features.append(self.neck_3d[self.feature_blocks.index(idx)](x.permute(0, 4, 1, 2, 3)))
        return self.neck_3d[-1](x.permute(0, 4, 1, 2, 3)), features

    def forward(self, slices: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Published signature: (D, 3, U, U) upsampled slices."""
        return self.forward_tokens(self.embed_slices(slices))
