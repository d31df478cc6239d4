"""3DSAM-adapter prompt encoder ("visual sampler"), from the published code
(med-air/3DSAM-adapter ``modeling/prompt_encoder.py``), published state-dict names.

Prompt encoder: a click's token is the image feature grid-sampled at the click (SAM's learned point
embeddings are not used, and nothing tells positive from other clicks); a two-way transformer of
``depth`` blocks lets 10 learned global queries plus the click tokens update the image features.
As published, the positional encodings are computed by the transformer's caller but never read by its
blocks, and ``cross_attn_token_to_image`` holds weights that the forward pass never uses; both are kept
so that published checkpoints load key for key.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctsam.model.sam3d_encoder import MLPBlock

N_GLOBAL_QUERIES = 10


class Attention(nn.Module):
    """SAM's attention with optional down-projection of the internal width."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the internal width")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        attn = q @ k.permute(0, 1, 3, 2)
        attn = torch.softmax(attn / math.sqrt(q.shape[-1]), dim=-1)
        out = attn @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Published block: self-attention over [global queries, click tokens], MLP on the global
    queries, then image tokens attend to the global queries."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int, attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.global_query = nn.Parameter(0.1 * torch.randn(1, N_GLOBAL_QUERIES, embedding_dim))

    def forward(self, img_embed: Tensor, point_embed: Tensor) -> tuple[Tensor, Tensor]:
        q = torch.cat([self.global_query, point_embed], dim=1)
        queries = self.norm2(q + self.norm1(self.self_attn(q=q, k=q, v=q)))
        point_embed = queries[:, N_GLOBAL_QUERIES:, :]
        queries = queries[:, :N_GLOBAL_QUERIES, :]
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(img_embed + self.cross_attn_image_to_token(q=img_embed, k=queries, v=queries))
        return keys, point_embed


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim) for _ in range(depth))

    def forward(self, image_embedding: Tensor, point_coord: Tensor) -> Tensor:
        """image_embedding (1, C, h, w, d); point_coord (1, 1, 1, N, 3) in grid_sample units ->
        updated image tokens (1, h*w*d, C)."""
        point_embedding = F.grid_sample(image_embedding, point_coord, align_corners=False).squeeze(2).squeeze(2)
        point_embedding = point_embedding.permute(0, 2, 1)
        image_tokens = image_embedding.flatten(2).permute(0, 2, 1)
        for layer in self.layers:
            image_tokens, point_embedding = layer(image_tokens, point_embedding)
        return image_tokens


class PromptEncoder(nn.Module):
    """Published ``PromptEncoder`` without the (disabled) mask prompt."""

    def __init__(self, *, transformer: TwoWayTransformer, num_pos_feats: int = 128) -> None:
        super().__init__()
        self.transformer = transformer
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((3, num_pos_feats)))

    def forward(self, image_embeddings: Tensor, point_coord: Tensor, img_size: tuple[int, int, int]) -> Tensor:
        """image_embeddings (1, C, h, w, d); point_coord (1, N, 3) published (d, w, h) patch voxels
        (not modified); img_size: the patch size -> (1, C, h, w, d)."""
        feat_size = list(image_embeddings.shape[2:])
        pc = point_coord.clone().float()
        pc[:, :, 0] = (pc[:, :, 0] + 0.5) * 2 / img_size[2] - 1
        pc[:, :, 1] = (pc[:, :, 1] + 0.5) * 2 / img_size[1] - 1
        pc[:, :, 2] = (pc[:, :, 2] + 0.5) * 2 / img_size[0] - 1
        features = self.transformer(image_embeddings, pc.reshape(1, 1, 1, -1, 3))
        return features.transpose(1, 2).reshape([1, -1] + feat_size)
