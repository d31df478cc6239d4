"""The composite CT-SAM3D-style promptable model and its metadata.

Frames and axes: a patch is an S^3 cube (S = 64 voxels of 1.5 mm for CT-SAM3D) indexed (z, y, x);
clicks are (x, y, z) patch voxel coordinates; images are already windowed and scaled to [0, 1]
(pre-processing lives outside the model, see :attr:`ModelMeta.hu_window`).

Use like SAM's predictor: ``features = model.encode(image)`` once per patch, then
``model.decode(features, points, labels, prev_mask)`` for as many prompt sets as needed; features
with batch 1 broadcast against B prompt sets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ctsam.model.cross_patch import CrossPatchPromptNet
from ctsam.model.decoder import QualityHead, SpadeMaskDecoder
from ctsam.model.encoder import ResTV2Encoder
from ctsam.model.prompt import ClickMapPromptEncoder

FORMAT_VERSION = 1
LICENCE_NOTE = (
    "Architecture and published weights: CT-SAM3D (alibaba-damo-academy/ct-sam3d, code Apache-2.0; "
    "weights from ModelScope xiuan123/CT-SAM3D, licence not stated there; check before redistribution)."
)


@dataclass(frozen=True)
class ModelMeta:
    """What a checkpoint says about the data it expects.

    Attributes:
        variant: registry name of the architecture ("restv2_tiny", "micro").
        patch_size: patch side in voxels (cube).
        spacing_mm: isotropic voxel spacing the model was trained at (mm).
        hu_window: (low, high) HU clipped and scaled linearly to [0, 1].
        format_version: ctsam checkpoint format version.
        sha256: sha256 of the source checkpoint file (the published params.pth for a conversion), or
            None for a model that was built, not loaded.
        source: file name of that source checkpoint.
        licence: licence note carried with the weights.
        dropped_keys: published state-dict keys deliberately not loaded, with the reason.
        cpp_trained: whether the cross-patch network's weights were trained (``ctsam train --cpp``).
        coarse_prompt_trained: whether the model was trained to take a coarse segmentation as its
            starting mask prompt (``train.coarse_prompt_probability`` > 0); ``refine.coarse_mask_prompt:
            auto`` feeds it the coarse labels only then.
        quality_r: Pearson correlation between the quality head's score and the true IoU on validation
            patches (measured by ``ctsam train`` with validation data and ``ctsam train-demo``); None when
            not measured. ``ctsam refine`` ignores the scores of a head below ``refine.min_quality_r``.
    """

    variant: str
    patch_size: int = 64
    spacing_mm: float = 1.5
    hu_window: tuple[float, float] = (-125.0, 225.0)
    format_version: int = FORMAT_VERSION
    sha256: str | None = None
    source: str | None = None
    licence: str = LICENCE_NOTE
    dropped_keys: dict[str, str] = field(default_factory=dict)
    cpp_trained: bool = False
    coarse_prompt_trained: bool = False
    quality_r: float | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hu_window"] = list(self.hu_window)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "hu_window" in kw:
            kw["hu_window"] = tuple(float(v) for v in kw["hu_window"])
        return cls(**kw)


@dataclass(frozen=True)
class PatchFeatures:
    """Encoder output for a batch of patches: 4 maps (B, C_l, S/2^(l+2), ...), finest first, (z, y, x)."""

    maps: tuple[torch.Tensor, ...]

    @property
    def batch_size(self) -> int:
        return int(self.maps[0].shape[0])

    def select(self, index: int | Sequence[int] | torch.Tensor) -> PatchFeatures:
        """Features of some patches (an int keeps a batch axis of 1)."""
        if isinstance(index, int):
            return PatchFeatures(tuple(m[index : index + 1] for m in self.maps))
        idx = torch.as_tensor(index, dtype=torch.long, device=self.maps[0].device)
        return PatchFeatures(tuple(m.index_select(0, idx) for m in self.maps))

    @staticmethod
    def cat(items: Sequence[PatchFeatures]) -> PatchFeatures:
        return PatchFeatures(tuple(torch.cat(level, dim=0) for level in zip(*(f.maps for f in items))))

    def to(self, device: torch.device | str) -> PatchFeatures:
        return PatchFeatures(tuple(m.to(device) for m in self.maps))


class CtSam3D(nn.Module):
    """Promptable 3D patch segmenter: image encoder + click-map prompt encoder + SPADE mask decoder +
    quality head, plus the cross-patch prompt network.

    Args:
        image_encoder: (B, 1, S, S, S) -> 4 feature maps.
        prompt_encoder: clicks (+ previous mask) -> (B, 3, S, S, S) prompt.
        mask_decoder: features + prompt -> (B, 2, S, S, S) logits and the last feature map.
        quality_head: last feature map -> (B, 2) quality scores.
        cross_patch: (image U, mask U, image V) -> (B, 1, S, S, S) heatmap.
        meta: checkpoint metadata.
    """

    mask_threshold = 0.5

    def __init__(
        self,
        *,
        image_encoder: ResTV2Encoder,
        prompt_encoder: ClickMapPromptEncoder,
        mask_decoder: SpadeMaskDecoder,
        quality_head: QualityHead,
        cross_patch: CrossPatchPromptNet,
        meta: ModelMeta,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.quality_head = quality_head
        self.cross_patch = cross_patch
        self.meta = meta

    @property
    def variant(self) -> str:
        return self.meta.variant

    @property
    def patch_size(self) -> int:
        return self.prompt_encoder.patch_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- checks
    def _check_volume(self, name: str, x: torch.Tensor, channels: int = 1) -> torch.Tensor:
        s = self.patch_size
        if x.ndim != 5 or tuple(x.shape[1:]) != (channels, s, s, s):
            raise ValueError(f"{name} must be (B, {channels}, {s}, {s}, {s}) indexed (z, y, x), got {tuple(x.shape)}")
        return x.to(device=self.device, dtype=torch.float32)

    # ---------------------------------------------------------------- API
    def encode(self, image: torch.Tensor) -> PatchFeatures:
        """(B, 1, S, S, S) normalised patches (z, y, x) -> :class:`PatchFeatures` with batch B
        (under the caller's grad mode)."""
        return PatchFeatures(tuple(self.image_encoder(self._check_volume("image", image))))

    def decode(
        self,
        features: PatchFeatures,
        points_xyz: torch.Tensor,
        point_labels: torch.Tensor,
        prev_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Decode B prompt sets against encoded patches (under the caller's grad mode: wrap in
        ``torch.inference_mode()`` for inference).

        Args:
            features: from :meth:`encode`, batch 1 (shared by every prompt set, never copied B times
                before the decoder's concatenations) or B.
            points_xyz: (B, N, 3) clicks as (x, y, z) patch voxels.
            point_labels: (B, N): 1 positive, 0 negative, -1 padding.
            prev_mask: (B, 1, S, S, S) previous probabilities, or None (zeros).

        Returns:
            ``logits`` (B, 2, S, S, S) before the sigmoid, ``probs`` (B, 1, S, S, S) = sigmoid of logits
            channel 0, ``iou`` (B, 1) quality score 0 (raw).
        """
        b = points_xyz.shape[0]
        if features.batch_size not in (1, b):
            raise ValueError(f"features have batch {features.batch_size}; expected 1 or the {b} prompt sets")
        if prev_mask is not None:
            prev_mask = self._check_volume("prev_mask", prev_mask)
        prompt = self.prompt_encoder(points_xyz.to(self.device), point_labels.to(self.device), prev_mask)
        logits, last = self.mask_decoder(features.maps, prompt)
        scores = self.quality_head(last)
        return {"logits": logits, "probs": torch.sigmoid(logits[:, 0:1]), "iou": scores[:, 0:1]}

    def forward(
        self,
        image: torch.Tensor,
        points_xyz: torch.Tensor,
        point_labels: torch.Tensor,
        prev_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode + decode with autograd (training); see :meth:`predict_patch`. The cross-patch network
        is trained through :attr:`cross_patch` directly."""
        return self.decode(self.encode(image), points_xyz, point_labels, prev_mask)

    @torch.no_grad()
    def predict_patch(
        self,
        image: torch.Tensor,
        points_xyz: torch.Tensor,
        point_labels: torch.Tensor,
        prev_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One-shot inference for B patches (image batch 1 is shared by B prompt sets).

        Args:
            image: (B, 1, S, S, S) normalised patch, (z, y, x).
            points_xyz: (B, N, 3) (x, y, z) patch voxels. point_labels: (B, N) 1/0/-1.
            prev_mask: (B, 1, S, S, S) or None.

        Returns:
            ``logits`` (B, 2, S, S, S), ``probs`` (B, 1, S, S, S), ``iou`` (B, 1).
        """
        return self.decode(self.encode(image), points_xyz, point_labels, prev_mask)

    @torch.no_grad()
    def cross_patch_heatmap(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        """Click heatmap for neighbour patch V.

        Args:
            image_u: (B, 1, S, S, S) normalised patch U. mask_u: (B, 1, S, S, S) U's mask or probabilities
                (binarised at > 0.5, as CT-SAM3D feeds it). image_v: (B, 1, S, S, S) neighbour patch V.

        Returns:
            (B, 1, S, S, S) raw heatmap (higher = click here), (z, y, x) of patch V.
        """
        image_u = self._check_volume("image_u", image_u)
        mask_u = (self._check_volume("mask_u", mask_u) > self.mask_threshold).float()
        image_v = self._check_volume("image_v", image_v)
        return self.cross_patch(image_u, mask_u, image_v)
