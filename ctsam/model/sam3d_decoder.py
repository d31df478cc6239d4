"""3DSAM-adapter decoder ``VIT_MLAHead_h`` (published ``modeling/mask_decoder.py``, published names).

Each of the 4 feature levels goes through two 3x3x3 conv + InstanceNorm + ReLU stages and is upsampled
(trilinear, align_corners) to twice the token grid; the 4 x 128 channels and the downsampled image are
concatenated and classified by two more convs; the logits are upsampled to the patch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLAHead(nn.Module):
    def __init__(self, mla_channels: int, mlahead_channels: int) -> None:
        super().__init__()

        def head() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(mla_channels, mlahead_channels, 3, padding=1, bias=False),
                nn.InstanceNorm3d(mlahead_channels),
                nn.ReLU(),
                nn.Conv3d(mlahead_channels, mlahead_channels, 3, padding=1, bias=False),
                nn.InstanceNorm3d(mlahead_channels),
                nn.ReLU(),
            )

        self.head2, self.head3, self.head4, self.head5 = head(), head(), head(), head()

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, scale_factor: float) -> Tensor:
        outs = []
        for head, x in ((self.head2, p2), (self.head3, p3), (self.head4, p4), (self.head5, p5)):
            outs.append(F.interpolate(head(x), scale_factor=scale_factor, mode="trilinear", align_corners=True))
        return torch.cat(outs, dim=1)


class VitMlaHeadH(nn.Module):
    """Published ``VIT_MLAHead_h``: 4 feature levels + the downsampled image -> class logits."""

    def __init__(self, mla_channels: int = 256, mlahead_channels: int = 128, num_classes: int = 2) -> None:
        super().__init__()
        self.mlahead = MLAHead(mla_channels, mlahead_channels)
        self.cls = nn.Sequential(
            nn.Conv3d(4 * mlahead_channels + 1, mlahead_channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(mlahead_channels),
            nn.ReLU(),
            nn.Conv3d(mlahead_channels, num_classes, 3, padding=1, bias=False),
        )

    def forward(self, inputs: list[Tensor], scale_factor1: float, scale_factor2: float) -> Tensor:
        x = self.mlahead(inputs[0], inputs[1], inputs[2], inputs[3], scale_factor=scale_factor1)
        x = torch.cat([x, inputs[-1]], dim=1)
        x = self.cls(x)
        return F.interpolate(x, scale_factor=scale_factor2, mode="trilinear", align_corners=True)
