"""Family ``ctsam3d``: the CT-SAM3D network behind the :class:`MaskRefiner` seam (numerics unchanged:
every call is delegated to :class:`~ctsam.model.ctsam3d.CtSam3D`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ctsam.model.api import InputSpec, MaskRefiner
from ctsam.model.ctsam3d import CtSam3D, ModelMeta, PatchFeatures

FAMILY = "ctsam3d"


class Ctsam3dModel(MaskRefiner):
    """A CT-SAM3D network; ``metadata`` holds the :class:`ModelMeta` fields plus ``family``."""

    family = FAMILY

    def __init__(self, net: CtSam3D) -> None:
        self._net = net

    @property
    def variant(self) -> str:  # type: ignore[override]
        return self._net.meta.variant

    @property
    def module(self) -> CtSam3D:
        return self._net

    @property
    def input_spec(self) -> InputSpec:
        m = self._net.meta
        s = int(m.patch_size)
        return InputSpec(
            patch_size_zyx=(s, s, s),
            spacing_zyx_mm=(float(m.spacing_mm),) * 3,
            hu_window=(float(m.hu_window[0]), float(m.hu_window[1])),
            unit_range=True,
        )

    @property
    def output_classes(self) -> tuple[str, ...]:
        return ("object",)

    @property
    def sha256(self) -> str | None:
        return self._net.meta.sha256

    @property
    def metadata(self) -> dict:
        return {**self._net.meta.to_dict(), "family": FAMILY}

    def update_metadata(self, **fields: Any) -> Ctsam3dModel:
        """Replace ModelMeta fields (e.g. ``spacing_mm``); returns self."""
        self._net.meta = ModelMeta.from_dict({**self._net.meta.to_dict(), **fields})
        return self

    def n_parameters(self) -> int:
        return self._net.n_parameters()

    def encode(self, image: torch.Tensor) -> PatchFeatures:
        return self._net.encode(image)

    def decode(
        self,
        features: PatchFeatures,
        points_xyz: torch.Tensor,
        point_labels: torch.Tensor,
        prev_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self._net.decode(features, points_xyz, point_labels, prev_mask)

    def predict_patch(
        self,
        image: torch.Tensor,
        points_xyz: torch.Tensor,
        point_labels: torch.Tensor,
        prev_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self._net.predict_patch(image, points_xyz, point_labels, prev_mask)

    def cross_patch_heatmap(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        return self._net.cross_patch_heatmap(image_u, mask_u, image_v)


def wrap(net: CtSam3D) -> Ctsam3dModel:
    return Ctsam3dModel(net)


def meta_from(metadata: Mapping[str, Any]) -> ModelMeta:
    return ModelMeta.from_dict(dict(metadata))
