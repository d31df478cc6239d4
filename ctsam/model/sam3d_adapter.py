"""The 3DSAM-adapter network as one module, its size variants, and the published checkpoint layout.

* :class:`Sam3dAdapterNet` holds ``image_encoder`` (ViT-B with 3D adapters), ``prompt_encoders`` (4)
  and ``mask_decoder`` (``VIT_MLAHead_h``); :meth:`Sam3dAdapterNet.forward` is the published test-time
  forward (``test.py`` ``model_predict``) for one patch.
* Variants: ``vit_b`` is the published configuration (224,466,316 state-dict values, of which
  100,663,296 are the 6 shifted-window attention masks the published code stores as buffers);
  ``tiny`` is the same code with 4 blocks, width 48, a 64^3 patch (for tests); ``tiny32`` the same on a
  32^3 patch (4-voxel tokens, as published; the demo lesion model).
* The published checkpoint is one ``torch.load`` dict: ``encoder_dict``, ``feature_dict`` (list of 4
  prompt-encoder state dicts) and ``decoder_dict``; :func:`published_to_state_dict` and
  :func:`state_dict_to_published` map it to and from this module's state dict (a prefix each).

Axes: the patch is (d, h, w) = (z, y, x); inside, tokens are (h, w, d) as published; points are the
published (d, w, h) patch voxels. :mod:`ctsam.model.sam3d_family` converts from ctsam's (z, y, x).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctsam.model.sam3d_decoder import VitMlaHeadH
from ctsam.model.sam3d_encoder import ImageEncoderViT3d
from ctsam.model.sam3d_prompt import PromptEncoder, TwoWayTransformer

N_PROMPT_ENCODERS = 4
#: prompt encoder used at test time (the deepest feature), as published.
PROMPTED_LEVEL = 3

PUBLISHED_KEYS = ("encoder_dict", "feature_dict", "decoder_dict")


@dataclass(frozen=True)
class Sam3dAdapterConfig:
    """Sizes of one variant (the published values in :data:`VARIANTS` ``vit_b``)."""

    patch_size: int
    upsample_size: int
    img_size: int
    vit_patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    out_chans: int
    window_size: int
    cubic_window_size: int
    num_slice: int
    prompt_depth: int
    prompt_heads: int
    prompt_mlp_dim: int
    num_pos_feats: int
    mlahead_channels: int
    num_classes: int = 2

    @property
    def grid(self) -> int:
        return self.upsample_size // self.vit_patch_size

    @property
    def feature_blocks(self) -> tuple[int, int, int]:
        step = self.depth // 4
        return (step, 2 * step, 3 * step)

    @property
    def global_attn_indexes(self) -> tuple[int, ...]:
        step = self.depth // 4
        return tuple(step * k - 1 for k in range(1, 5))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


VARIANTS: dict[str, Sam3dAdapterConfig] = {
    # published test.py / train.py: ViT-B, img_size 1024, window 14, cubic window 8, num_slice 16, 128^3 crops
    "vit_b": Sam3dAdapterConfig(
        patch_size=128,
        upsample_size=512,
        img_size=1024,
        vit_patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        out_chans=256,
        window_size=14,
        cubic_window_size=8,
        num_slice=16,
        prompt_depth=2,
        prompt_heads=8,
        prompt_mlp_dim=2048,
        num_pos_feats=128,
        mlahead_channels=128,
    ),
    # same code, small: 4 blocks of width 48, 64^3 patch upsampled to 128^2 slices, 8^3 tokens
    "tiny": Sam3dAdapterConfig(
        patch_size=64,
        upsample_size=128,
        img_size=256,
        vit_patch_size=16,
        embed_dim=48,
        depth=4,
        num_heads=3,
        mlp_ratio=4.0,
        out_chans=32,
        window_size=7,
        cubic_window_size=4,
        num_slice=16,
        prompt_depth=2,
        prompt_heads=4,
        prompt_mlp_dim=64,
        num_pos_feats=16,
        mlahead_channels=16,
    ),
}
# the tiny network on a 32^3 patch (upsampled 4x, not 2x): 4-voxel tokens and a decoder grid of 2 voxels,
# the published ratios (the 128^3 published patch has 4-voxel tokens too); the demo lesion model's variant
VARIANTS["tiny32"] = dataclasses.replace(VARIANTS["tiny"], patch_size=32)


class Sam3dAdapterNet(nn.Module):
    """Image encoder + 4 prompt encoders + MLA decoder (published modules, published names)."""

    def __init__(self, config: Sam3dAdapterConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.image_encoder = ImageEncoderViT3d(
            img_size=c.img_size,
            upsample_size=c.upsample_size,
            patch_size=c.vit_patch_size,
            embed_dim=c.embed_dim,
            depth=c.depth,
            num_heads=c.num_heads,
            mlp_ratio=c.mlp_ratio,
            out_chans=c.out_chans,
            window_size=c.window_size,
            cubic_window_size=c.cubic_window_size,
            global_attn_indexes=c.global_attn_indexes,
            num_slice=c.num_slice,
            feature_blocks=c.feature_blocks,
        )
        self.prompt_encoders = nn.ModuleList(
            PromptEncoder(
                transformer=TwoWayTransformer(c.prompt_depth, c.out_chans, c.prompt_heads, c.prompt_mlp_dim),
                num_pos_feats=c.num_pos_feats,
            )
            for _ in range(N_PROMPT_ENCODERS)
        )
        self.mask_decoder = VitMlaHeadH(c.out_chans, c.mlahead_channels, c.num_classes)

    def forward(self, patch: torch.Tensor, points_dwh: torch.Tensor) -> torch.Tensor:
        """Published test-time forward for one patch.

        Args:
            patch: (1, 1, P, P, P) normalised image, (d, h, w).
            points_dwh: (1, N, 3) clicks as published: (d, w, h) patch voxels.

        Returns:
            (1, num_classes, P, P, P) logits, (d, h, w).
        """
        p = self.config.patch_size
        if patch.ndim != 5 or tuple(patch.shape) != (1, 1, p, p, p):
            raise ValueError(f"patch must be (1, 1, {p}, {p}, {p}), got {tuple(patch.shape)}")
        tokens = self.image_encoder.embed_volume(patch)
        deepest, features = self.image_encoder.forward_tokens(tokens)
        del tokens
        features.append(deepest)
        features[PROMPTED_LEVEL] = self.prompt_encoders[PROMPTED_LEVEL](features[PROMPTED_LEVEL], points_dwh, (p, p, p))
        dec = 2 * self.config.grid
        image_small = F.interpolate(
            patch[0, 0].permute(1, 2, 0).unsqueeze(0).unsqueeze(0), scale_factor=dec / p, mode="trilinear"
        )
        features.append(image_small)
        logits = self.mask_decoder(features, 2, p // dec)
        return logits.permute(0, 1, 4, 2, 3)


def build_net(variant: str) -> Sam3dAdapterNet:
    """A randomly initialised network of a registered variant."""
    try:
        config = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown sam3d_adapter variant {variant!r}; known: {sorted(VARIANTS)}") from None
    return Sam3dAdapterNet(config)


# ---------------------------------------------------------------- published checkpoint layout
def _prefixes() -> list[tuple[str, str]]:
    """(published part, module prefix) pairs; feature_dict parts are ``feature_dict.<i>``."""
    return (
        [("encoder_dict", "image_encoder.")]
        + [(f"feature_dict.{i}", f"prompt_encoders.{i}.") for i in range(N_PROMPT_ENCODERS)]
        + [("decoder_dict", "mask_decoder.")]
    )


def published_parts(obj: Mapping) -> dict[str, Mapping[str, torch.Tensor]]:
    """``{"encoder_dict": sd, "feature_dict.0": sd, ..., "decoder_dict": sd}`` from a published dict
    (raises ValueError describing what is wrong with its layout)."""
    missing = [k for k in PUBLISHED_KEYS if k not in obj]
    if missing:
        raise ValueError(f"no {', '.join(missing)} entr{'y' if len(missing) == 1 else 'ies'}")
    features = obj["feature_dict"]
    if not isinstance(features, Sequence) or len(features) != N_PROMPT_ENCODERS:
        raise ValueError(
            f"feature_dict must be a list of {N_PROMPT_ENCODERS} state dicts, "
            f"found {type(features).__name__} of length {len(features) if isinstance(features, Sequence) else '?'}"
        )
    parts = {"encoder_dict": obj["encoder_dict"], "decoder_dict": obj["decoder_dict"]}
    for i, sd in enumerate(features):
        parts[f"feature_dict.{i}"] = sd
    for name, sd in parts.items():
        if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ValueError(f"{name} is not a state dict of tensors")
    return parts


def published_to_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """Published dict -> this module's state dict (published keys under the part's prefix). Entries
    keep the published order; keys are ``<prefix><published key>``."""
    parts = published_parts(obj)
    out: dict[str, torch.Tensor] = {}
    for part, prefix in _prefixes():
        for k, v in parts[part].items():
            out[prefix + k] = v
    return out


def published_name(module_key: str) -> str:
    """``image_encoder.blocks.0.norm1.weight`` -> ``encoder_dict.blocks.0.norm1.weight`` (for messages)."""
    for part, prefix in _prefixes():
        if module_key.startswith(prefix):
            return f"{part}.{module_key[len(prefix) :]}"
    return module_key


def state_dict_to_published(state: Mapping[str, torch.Tensor]) -> dict:
    """This module's state dict -> the published checkpoint dict."""
    out: dict = {"encoder_dict": {}, "feature_dict": [{} for _ in range(N_PROMPT_ENCODERS)], "decoder_dict": {}}
    for k, v in state.items():
        for part, prefix in _prefixes():
            if k.startswith(prefix):
                sub = k[len(prefix) :]
                if part.startswith("feature_dict."):
                    out["feature_dict"][int(part.split(".")[1])][sub] = v
                else:
                    out[part][sub] = v
                break
        else:
            raise KeyError(f"no published place for {k}")
    return out
