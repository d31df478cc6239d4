"""Cross-patch prompt (CPP) network: where to click in a neighbouring patch.

Input channels, each (B, 1, S, S, S) indexed (z, y, x): the image of patch U, U's predicted binary
mask (probability > 0.5) and the image of a neighbouring patch V. Output: (B, 1, S, S, S) heatmap
(raw, no activation) of click locations in V. The network is MONAI's residual ``UNet`` with the
published CT-SAM3D arguments (3 -> 1 channels, stride 2 everywhere, 2 residual units, instance norm,
PReLU), so the published ``cpp_predictor.*`` weights load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CrossPatchPromptNet(nn.Module):
    """MONAI 3D UNet, 3 input channels [image U, mask U, image V] -> 1 heatmap channel.

    Args:
        channels: UNet widths per level, e.g. (16, 32, 64, 128, 256).
    """

    def __init__(self, *, channels: Sequence[int]) -> None:
        super().__init__()
        from monai.networks.layers.factories import Norm
        from monai.networks.nets import UNet

        self.unet = UNet(
            spatial_dims=3,
            in_channels=3,
            out_channels=1,
            channels=list(channels),
            strides=[2] * (len(channels) - 1),
            num_res_units=2,
            norm=Norm.INSTANCE,
        )

    def forward(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S, S) x 3 -> (B, 1, S, S, S) heatmap for patch V."""
        return self.unet(torch.cat([image_u, mask_u.to(image_u.dtype), image_v], dim=1))
