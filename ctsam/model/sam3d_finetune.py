"""3DSAM-adapter fine-tuning: the published freeze recipe and SAM ViT weights mapped to 3D.

Both follow the published ``train.py`` (med-air/3DSAM-adapter):

* :func:`load_sam_image_encoder` -- SAM's 2D image encoder weights (Meta's ``sam_vit_b_01ec64.pth``,
  keys ``image_encoder.*``) are loaded by name into the 3D encoder, as the published
  ``img_encoder.load_state_dict(sam.image_encoder.state_dict(), strict=False)`` does: patch embedding,
  the 64x64 absolute position table (average-pooled to the token grid at run time), every block's
  norms, attention (qkv, proj, rel_pos_h, rel_pos_w) and MLP. SAM's 2D ``neck`` is not used (the 3D
  encoder has its own ``neck_3d``). Then, as published, each block's depth relative-position table
  ``rel_pos_d`` is set to ``0.5 * (rel_pos_h + rel_pos_w)``. Everything else (depth embedding,
  slice embedding, adapters, ``lr``, the 3D necks, the shifted-window masks) keeps its new
  initialisation. A SAM key whose name exists with another shape is an error (the published
  ``load_state_dict`` raises too).
* :func:`apply_finetune_recipe` ``"adapters"`` -- image encoder frozen except the depth embedding, the
  slice embedding, each block's ``norm1``, ``adapter``, ``norm2`` and ``rel_pos_d``, and the 3D necks;
  all 4 prompt encoders and the decoder train. ``"full"`` (alias ``"all"``) trains everything,
  ``"decoder"`` only the prompt encoders and the decoder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from ctsam.errors import CheckpointError
from ctsam.model.api import PromptableModel
from ctsam.model.sam3d_adapter import Sam3dAdapterNet
from ctsam.model.sam3d_encoder import Block3d

RECIPES = ("adapters", "decoder", "full", "all")

SAM_PREFIX = "image_encoder."
#: Meta SAM image-encoder keys the 3D encoder does not use, with the reason.
_UNUSED_SAM = [(re.compile(r"neck\.\d+\.\w+$"), "SAM's 2D neck; the 3D encoder has its own neck_3d (new weights)")]
_NOT_ENCODER = "not part of SAM's image encoder (2D prompt encoder / mask decoder are not used)"


def _net(model: PromptableModel | nn.Module) -> Sam3dAdapterNet:
    net = model.module if isinstance(model, PromptableModel) else model
    if not isinstance(net, Sam3dAdapterNet):
        raise TypeError(f"a 3DSAM-adapter model is needed, got {type(net).__name__}")
    return net


def _blocks(net: Sam3dAdapterNet) -> list[Block3d]:
    return [cast(Block3d, b) for b in net.image_encoder.blocks]


def apply_finetune_recipe(model: PromptableModel | nn.Module, recipe: str = "adapters") -> tuple[int, int]:
    """Set ``requires_grad`` as the published training does; returns (trainable, total) parameter counts."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {recipe!r}; known: {', '.join(RECIPES)}")
    net = _net(model)
    net.requires_grad_(recipe in ("full", "all"))
    if recipe == "adapters":
        enc = net.image_encoder
        enc.depth_embed.requires_grad_(True)
        enc.slice_embed.requires_grad_(True)
        for blk in _blocks(net):
            blk.norm1.requires_grad_(True)
            blk.adapter.requires_grad_(True)
            blk.norm2.requires_grad_(True)
            blk.attn.rel_pos_d.requires_grad_(True)
        enc.neck_3d.requires_grad_(True)
    if recipe in ("adapters", "decoder"):
        net.prompt_encoders.requires_grad_(True)
        net.mask_decoder.requires_grad_(True)
    params = list(net.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@dataclass
class SamMappingReport:
    """Where every key went: SAM keys loaded or unused (with reason); 3D keys loaded, derived or new."""

    loaded: list[str] = field(default_factory=list)
    unused: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "loaded": self.loaded,
            "unused": self.unused,
            "derived": self.derived,
            "initialised": self.initialised,
            "counts": {
                "loaded": len(self.loaded),
                "unused": len(self.unused),
                "derived": len(self.derived),
                "initialised": len(self.initialised),
            },
        }


def load_sam_image_encoder(model: PromptableModel | nn.Module, sam_state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Map Meta's SAM ViT weights (full SAM checkpoint, keys ``image_encoder.*``, or the image encoder's
    own state dict) into the 3D encoder as published; see the module docstring. Nothing is changed
    when a key does not fit. Returns :class:`SamMappingReport` as a dict.

    Raises:
        CheckpointError: a SAM key that names a 3D tensor of another shape, a SAM image-encoder tensor
            the published loader would need but the dict lacks, or non-finite values.
    """
    enc = _net(model).image_encoder
    if any(k.startswith(SAM_PREFIX) for k in sam_state_dict):
        source = {k[len(SAM_PREFIX) :]: v for k, v in sam_state_dict.items() if k.startswith(SAM_PREFIX)}
        others = {k: _NOT_ENCODER for k in sam_state_dict if not k.startswith(SAM_PREFIX)}
        shown = lambda k: SAM_PREFIX + k
    else:
        source, others, shown = dict(sam_state_dict), {}, (lambda k: k)
    target = enc.state_dict()
    report = SamMappingReport(unused=dict(others))
    plan: dict[str, torch.Tensor] = {}
    for k, v in source.items():
        reason = next((why for pat, why in _UNUSED_SAM if pat.match(k)), None)
        if reason is not None:
            report.unused[shown(k)] = reason
            continue
        if k not in target:
            raise CheckpointError(
                "SAM weights do not fit the 3D encoder",
                path=shown(k),
                expected="SAM ViT image-encoder keys (patch_embed, pos_embed, blocks.N.*, neck.*)",
                found=f"{shown(k)} has no place in the 3D encoder",
                fix="pass Meta's sam_vit_b_01ec64.pth for the vit_b variant",
            )
        if tuple(v.shape) != tuple(target[k].shape):
            raise CheckpointError(
                "SAM weights do not fit the 3D encoder",
                path=shown(k),
                expected=f"{tuple(target[k].shape)}",
                found=f"{tuple(v.shape)}",
                fix="SAM ViT-B weights fit the vit_b variant only",
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                "SAM weights hold non-finite values",
                path=shown(k),
                found="NaN/inf",
                fix="use an intact sam_vit_b_01ec64.pth",
            )
        plan[k] = v
    needed = [k for k in target if _sam_has(k) and k not in plan]
    if needed:
        raise CheckpointError(
            "SAM image-encoder weights are incomplete",
            path=shown(needed[0]),
            expected=f"{sum(1 for k in target if _sam_has(k))} SAM image-encoder tensors",
            found=f"{len(needed)} missing (first: {shown(needed[0])})",
            fix="pass Meta's complete sam_vit_b_01ec64.pth",
        )
    with torch.no_grad():
        for k, v in plan.items():
            target[k].copy_(v.to(dtype=target[k].dtype))
        report.loaded = sorted(plan, key=list(target).index)
        for i, blk in enumerate(_blocks(_net(model))):
            attn = blk.attn
            attn.rel_pos_d = nn.Parameter(
                0.5 * (attn.rel_pos_h + attn.rel_pos_w), requires_grad=attn.rel_pos_d.requires_grad
            )
            report.derived[f"blocks.{i}.attn.rel_pos_d"] = "0.5 * (rel_pos_h + rel_pos_w), as published"
    report.initialised = [k for k in target if k not in plan and k not in report.derived]
    return report.to_dict()


_SAM_KEYS = re.compile(
    r"(patch_embed\.proj\.(weight|bias)|pos_embed|blocks\.\d+\.(norm1|norm2)\.(weight|bias)"
    r"|blocks\.\d+\.attn\.(qkv|proj)\.(weight|bias)|blocks\.\d+\.attn\.rel_pos_[hw]"
    r"|blocks\.\d+\.mlp\.lin[12]\.(weight|bias))$"
)


def _sam_has(key: str) -> bool:
    """Whether a 3D-encoder key is one that SAM's image encoder provides (same name)."""
    return bool(_SAM_KEYS.match(key))
