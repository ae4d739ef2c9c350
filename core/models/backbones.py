"""Shared encoders. Each returns a list of feature maps, finest first, and declares their channels
in `out_channels`."""

from __future__ import annotations

import torch
from torch import nn

from core.models.heads import conv_bn_relu


class SmallCNN(nn.Module):
    """A compact encoder that trains on two CPU cores in minutes.

    Input (B, 3, H, W); outputs [(B, 2w, H/2, W/2), (B, 4w, H/4, W/4)] for width w.
    """

    def __init__(self, width: int = 16, in_channels: int = 3):
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn_relu(in_channels, 2 * w, stride=2),
                                  conv_bn_relu(2 * w, 2 * w))
        self.body = nn.Sequential(
            conv_bn_relu(2 * w, 4 * w, stride=2),
            conv_bn_relu(4 * w, 4 * w),
            conv_bn_relu(4 * w, 4 * w, dilation=2),
        )
        self.out_channels = [2 * w, 4 * w]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fine = self.stem(x)
        return [fine, self.body(fine)]


RESNET_DEPTHS = (18, 34, 50)


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """Trade a ResNet stage's stride for dilation: every strided conv gets stride 1, every 3x3
    conv dilation (and padding) `dilation`, so the stage keeps its input resolution."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its classifier, dilated to output stride 8 or 16 (DeepLab).

    Submodules keep torchvision's names (conv1, bn1, layer1..layer4), so a torchvision state dict
    loads into it. Random init; nothing is downloaded (see `load_backbone_weights`).
    Input (B, 3, H, W); outputs [(B, C1, H/4, W/4), (B, C4, H/os, W/os)] with C1, C4 = 64, 512
    for depth 18 / 34 and 256, 2048 for depth 50.
    """

    def __init__(self, depth: int = 18, output_stride: int = 8, in_channels: int = 3):
        super().__init__()
        import torchvision.models as tvm

        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth {depth!r} is not built in; accepted: {RESNET_DEPTHS}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride {output_stride!r} is not accepted; choose 8 or 16")
        net = getattr(tvm, f"resnet{depth}")(weights=None)
        self.conv1 = (net.conv1 if in_channels == 3
                      else nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False))
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if output_stride == 8:
            _dilate(self.layer3, 2)
            _dilate(self.layer4, 4)
        else:
            _dilate(self.layer4, 2)
        expansion = 4 if depth == 50 else 1
        self.out_channels = [64 * expansion, 512 * expansion]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fine = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return [fine, self.layer4(self.layer3(self.layer2(fine)))]
