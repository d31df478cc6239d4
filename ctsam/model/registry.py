"""Model variants: sizes live only here (one public builder per variant, one private ``_build``).

* ``restv2_tiny`` -- the published CT-SAM3D network (74.0 M state-dict values incl. the CPP UNet).
* ``micro`` -- the same structure with small widths (< 3 M parameters) for tests and the demo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ctsam.model.cross_patch import CrossPatchPromptNet
from ctsam.model.ctsam3d import CtSam3D, ModelMeta
from ctsam.model.decoder import QualityHead, SpadeMaskDecoder
from ctsam.model.encoder import ResTV2Encoder
from ctsam.model.prompt import ClickMapPromptEncoder

PATCH_SIZE = 64


def _build(
    *,
    variant: str,
    embed_dims: Sequence[int],
    depths: Sequence[int],
    num_heads: Sequence[int],
    reductions: Sequence[int],
    decoder_width: int,
    spade_hidden: int,
    quality_hidden: int,
    cpp_channels: Sequence[int],
    meta: ModelMeta | None,
) -> CtSam3D:
    return CtSam3D(
        image_encoder=ResTV2Encoder(
            in_channels=1,
            embed_dims=embed_dims,
            depths=depths,
            num_heads=num_heads,
            reductions=reductions,
            out_channels=decoder_width,
        ),
        prompt_encoder=ClickMapPromptEncoder(patch_size=PATCH_SIZE),
        mask_decoder=SpadeMaskDecoder(width=decoder_width, prompt_channels=3, hidden=spade_hidden, num_masks=2),
        quality_head=QualityHead(in_channels=decoder_width // 4, hidden=quality_hidden, num_outputs=2, depth=3),
        cross_patch=CrossPatchPromptNet(channels=cpp_channels),
        meta=meta or ModelMeta(variant=variant, patch_size=PATCH_SIZE),
    )


def build_restv2_tiny(*, meta: ModelMeta | None = None) -> CtSam3D:
    """The published CT-SAM3D ``restv2_tiny`` network (randomly initialised; load weights separately)."""
    return _build(
        variant="restv2_tiny",
        embed_dims=(96, 192, 384, 768),
        depths=(1, 2, 6, 2),
        num_heads=(1, 2, 4, 8),
        reductions=(8, 4, 2, 1),
        decoder_width=256,
        spade_hidden=128,
        quality_hidden=256,
        cpp_channels=(16, 32, 64, 128, 256),
        meta=meta,
    )


def build_micro(*, meta: ModelMeta | None = None) -> CtSam3D:
    """Same structure as ``restv2_tiny`` with small widths (1.41 M parameters, 1.0 M without the CPP UNet)."""
    return _build(
        variant="micro",
        embed_dims=(16, 32, 64, 128),
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 4),
        reductions=(8, 4, 2, 1),
        decoder_width=16,
        spade_hidden=8,
        quality_hidden=32,
        cpp_channels=(4, 8, 16, 32, 64),
        meta=meta,
    )


MODEL_REGISTRY: dict[str, Callable[..., CtSam3D]] = {
    "restv2_tiny": build_restv2_tiny,
    "micro": build_micro,
}


def build_model(variant: str, *, meta: ModelMeta | None = None) -> CtSam3D:
    """Build a registered variant (randomly initialised)."""
    try:
        builder = MODEL_REGISTRY[variant]
    except KeyError:
        raise ValueError(f"unknown model variant {variant!r}; known: {sorted(MODEL_REGISTRY)}") from None
    return builder(meta=meta)
