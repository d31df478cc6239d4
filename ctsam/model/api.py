"""The model seam: what every promptable model offers, independent of its network.

* :class:`InputSpec` -- the patch a model wants (size, spacing, intensity normalisation).
* :class:`PromptableModel` -- family, variant, sha256, metadata, the torch module, input spec, output
  classes; device moves and train/eval.
* :class:`OneClickSegmenter` -- models that segment one object from clicks in one forward
  (``logits`` / ``foreground_probability``; family ``sam3d_adapter``).
* :class:`MaskRefiner` -- models with an encode-once / decode-many interface, quality scores and a
  cross-patch heatmap (family ``ctsam3d``; used by the refine engine).

Code outside :mod:`ctsam.model` types against these classes only; concrete classes live in the
family modules and are reached through :func:`ctsam.model.load_model` / :func:`ctsam.model.build_model`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """The patch a model expects.

    Attributes:
        patch_size_zyx: patch size in voxels (z, y, x).
        spacing_zyx_mm: voxel spacing the model was trained at (mm, z, y, x).
        hu_window: (low, high) HU the image is clipped to, or None (no clipping).
        zscore_mean_std: (mean, sd) subtracted / divided after clipping, or None.
        preset: name of the published convention (``kits``, ``lits``, ...) or None.
        unit_range: scale the clipped window linearly to [0, 1] (CT-SAM3D) instead of z-scoring.
    """

    patch_size_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    hu_window: tuple[float, float] | None = None
    zscore_mean_std: tuple[float, float] | None = None
    preset: str | None = None
    unit_range: bool = False

    def normalise(self, hu: np.ndarray) -> np.ndarray:
        """HU -> model input (float32): clip to the window, then z-score (or scale to [0, 1]), as published."""
        x = np.asarray(hu, dtype=np.float32)
        if self.hu_window is not None:
            lo, hi = (float(v) for v in self.hu_window)
            x = np.clip(x, np.float32(lo), np.float32(hi))
            if self.unit_range:
                return ((x - lo) / (hi - lo)).astype(np.float32)
        if self.zscore_mean_std is not None:
            mean, sd = self.zscore_mean_std
            x = (x - np.float32(mean)) / np.float32(sd)
        return x.astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {
            "patch_size_zyx": list(self.patch_size_zyx),
            "spacing_zyx_mm": list(self.spacing_zyx_mm),
            "hu_window": None if self.hu_window is None else list(self.hu_window),
            "zscore_mean_std": None if self.zscore_mean_std is None else list(self.zscore_mean_std),
            "preset": self.preset,
            "unit_range": self.unit_range,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        def pair(v: Any) -> tuple[float, float] | None:
            return None if v is None else (float(v[0]), float(v[1]))

        return cls(
            patch_size_zyx=tuple(int(v) for v in d["patch_size_zyx"]),  # type: ignore[arg-type]
            spacing_zyx_mm=tuple(float(v) for v in d["spacing_zyx_mm"]),  # type: ignore[arg-type]
            hu_window=pair(d.get("hu_window")),
            zscore_mean_std=pair(d.get("zscore_mean_std")),
            preset=d.get("preset"),
            unit_range=bool(d.get("unit_range", False)),
        )


class PromptableModel(abc.ABC):
    """A loaded or built model of one family. ``module`` is the torch network (for training);
    everything else a pipeline stage needs is here."""

    family: str
    variant: str

    @property
    @abc.abstractmethod
    def module(self) -> nn.Module:
        """The torch network."""

    @property
    @abc.abstractmethod
    def input_spec(self) -> InputSpec:
        """The patch this model expects."""

    @property
    @abc.abstractmethod
    def output_classes(self) -> tuple[str, ...]:
        """Names of the output channels (e.g. ``("background", "kidney_tumor")``)."""

    @property
    @abc.abstractmethod
    def metadata(self) -> dict:
        """JSON-serialisable metadata (family, variant, input spec, provenance, ...)."""

    @property
    @abc.abstractmethod
    def sha256(self) -> str | None:
        """sha256 of the checkpoint the weights came from (None for a freshly built model)."""

    @abc.abstractmethod
    def update_metadata(self, **fields: Any) -> PromptableModel:
        """Replace metadata fields (CT-SAM3D: ``spacing_mm``, ``quality_r``, ...; others: free keys
        such as provenance); returns self."""

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> PromptableModel:
        self.module.to(device)
        return self

    def eval(self) -> PromptableModel:
        self.module.eval()
        return self

    def train(self, mode: bool = True) -> PromptableModel:
        self.module.train(mode)
        return self

    def n_parameters(self) -> int:
        """Number of values in the state dict (parameters and stored buffers), as ``ctsam model info`` prints."""
        return sum(int(v.numel()) for v in self.module.state_dict().values())

    def __repr__(self) -> str:
        return f"<{self.family} {self.variant} model, {self.n_parameters():,} values, sha256 {self.sha256}>"


class OneClickSegmenter(PromptableModel):
    """Segments one object per patch from clicks in a single forward pass."""

    @abc.abstractmethod
    def logits(self, patch: torch.Tensor, points_zyx: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, H, W) normalised patches, (B, N, 3) click voxels (z, y, x) in the patch, (B, N)
        labels (1 positive, -1 padding) -> (B, C, D, H, W) logits (under the caller's grad mode)."""

    @abc.abstractmethod
    def with_input_spec(self, spec: InputSpec, output_classes: tuple[str, ...] | None = None) -> OneClickSegmenter:
        """Set the input convention (and output class names); returns self."""

    @abc.abstractmethod
    def with_preset(self, preset: str) -> OneClickSegmenter:
        """Set a published preset's input convention (``kits``, ``lits``, ...); returns self."""

    def foreground_probability(
        self, patch: torch.Tensor, points_zyx: torch.Tensor, point_labels: torch.Tensor
    ) -> torch.Tensor:
        """(B, D, H, W): softmax channel 1 of :meth:`logits`."""
        return torch.softmax(self.logits(patch, points_zyx, point_labels).float(), dim=1)[:, 1]


class MaskRefiner(PromptableModel):
    """Encode a patch once, decode many click sets against it (CT-SAM3D style)."""

    @abc.abstractmethod
    def encode(self, image: torch.Tensor) -> Any:
        """(B, 1, S, S, S) normalised patches -> features (opaque, with ``select``/``cat``/``to``)."""

    @abc.abstractmethod
    def decode(
        self, features: Any, points_xyz: torch.Tensor, point_labels: torch.Tensor, prev_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Decode click sets: ``logits``, ``probs`` (B, 1, S, S, S), ``iou`` (B, 1)."""

    @abc.abstractmethod
    def cross_patch_heatmap(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        """Where to click in a neighbouring patch V given patch U and its mask."""
