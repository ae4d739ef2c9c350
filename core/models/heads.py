"""Task heads. A head maps the encoder's feature maps (finest first) to one task's raw output:
(B, C, h, w) at its own resolution for a per-pixel task (the model upsamples it to the image),
(B, C) for an image-level one. Which head a task gets follows `TaskSpec.per_pixel`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DenseHead(nn.Module):
    """The coarsest map, reduced and upsampled to the finest one, fused with it, then a 1x1
    prediction: [(B, C_0, h, w), ..., (B, C_n, h', w')] -> (B, out_channels, h, w). With one map
    there is nothing to fuse."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, width: int):
        super().__init__()
        fine, coarse = in_channels[0], in_channels[-1]
        self.reduce = conv_bn_relu(coarse, width)
        self.fuse = conv_bn_relu(width + fine, width) if len(in_channels) > 1 else nn.Identity()
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.reduce(features[-1])
        if len(features) > 1:
            fine = features[0]
            x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            x = self.fuse(torch.cat([x, fine], dim=1))
        return self.predict(x)


class ASPPHead(nn.Module):
    """DeepLab-v3 head on the coarsest map: atrous spatial pyramid pooling (torchvision's ASPP),
    a 3x3 conv and a 1x1 prediction: [..., (B, C_n, h, w)] -> (B, out_channels, h, w)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, width: int,
                 rates: Sequence[int] = (12, 24, 36)):
        super().__init__()
        # imported here: torchvision's import costs seconds (torch._dynamo through its ops), which
        # every process that never builds this head (the dashboard's first page) would pay
        from torchvision.models.segmentation.deeplabv3 import ASPP

        self.aspp = ASPP(in_channels[-1], list(rates), width)
        self.refine = conv_bn_relu(width, width)
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.predict(self.refine(self.aspp(features[-1])))


class ClassificationHead(nn.Module):
    """Image-level head: global average pool of the coarsest map, two linear layers -> (B, C)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, width: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_channels[-1], width), nn.ReLU(inplace=True),
                                nn.Linear(width, out_channels))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fc(features[-1].mean(dim=(2, 3)))
