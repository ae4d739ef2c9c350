"""A multi-task model defined in the user's own file, registered as an mtunlearn plugin.

The layout is the common one (LibMTL, MTAN code): a shared encoder and a `decoders` dict with one
decoder per task. Nothing here comes from mtunlearn except the two lines that register the
builder: `MultiTaskWrapper` turns the encoder and the decoders into the engine's contract.

    mtu info --plugin my_models --architectures   # lists "two_scale_net" as a plugin
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models import MultiTaskWrapper, register_architecture


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Encoder(nn.Module):
    """images (B, 3, H, W) -> one feature map (B, 2w, H/4, W/4)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.layer1 = _block(3, width, stride=2)
        self.layer2 = _block(width, 2 * width, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(x))


class Decoder(nn.Module):
    """(B, 2w, h, w) -> (B, out_channels, h, w); the model upsamples to the image."""

    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.conv = _block(2 * width, width)
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x))


class TwoScaleNet(nn.Module):
    """How the user trains it elsewhere, with plain PyTorch: forward returns raw outputs at the
    image size; normals are normalised by the training loss, not by the model."""

    def __init__(self, channels: dict[str, int], width: int = 8):
        super().__init__()
        self.encoder = Encoder(width)
        self.decoders = nn.ModuleDict({name: Decoder(width, c) for name, c in channels.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rep = self.encoder(x)
        return {name: F.interpolate(decoder(rep), size=x.shape[-2:], mode="bilinear", align_corners=False)
                for name, decoder in self.decoders.items()}


@register_architecture("two_scale_net")
def two_scale_net(tasks, width: int = 8) -> MultiTaskWrapper:
    """The user's encoder + one decoder per task (examples/own_model/my_models.py)."""
    return MultiTaskWrapper(Encoder(width), {t.name: Decoder(width, t.channels) for t in tasks}, tasks)
