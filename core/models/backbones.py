"""Shared encoders. Each returns a list of feature maps, finest first, and declares their channels."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


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


class ResNet18Encoder(nn.Module):
    """torchvision ResNet-18 trunk (random init, nothing downloaded) up to layer3.

    Input (B, 3, H, W); outputs [(B, 64, H/4, W/4), (B, 256, H/16, W/16)].
    """

    def __init__(self, in_channels: int = 3):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.body = nn.Sequential(net.layer2, net.layer3)
        self.out_channels = [64, 256]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fine = self.stem(x)
        return [fine, self.body(fine)]


BACKBONES = {"small_cnn": SmallCNN, "resnet18": ResNet18Encoder}
