"""The built-in architectures: `small_cnn` (the sample models) and dilated torchvision ResNet
trunks with a fusion or DeepLab-v3 (ASPP) head per task, the standard NYUv2 multi-task setup."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from core.models.backbones import ResNetTrunk, SmallCNN
from core.models.heads import ASPPHead, ClassificationHead, DenseHead
from core.models.registry import register_architecture
from core.models.wrapper import MultiTaskWrapper
from core.tasks import TaskSpec

_DENSE_HEADS = {"dense": DenseHead, "aspp": ASPPHead}


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} is not accepted; give an integer from {low} to {high}")
    return value


def _heads(tasks: Sequence[TaskSpec], in_channels: Sequence[int], width: int, head: str,
           **dense_args) -> dict[str, nn.Module]:
    if head not in _DENSE_HEADS:
        raise ValueError(f"head {head!r} is not accepted; choose one of {', '.join(_DENSE_HEADS)}")
    dense = _DENSE_HEADS[head]
    return {task.name: (dense(in_channels, task.channels, width, **dense_args) if task.per_pixel
                        else ClassificationHead(in_channels, task.channels, width))
            for task in tasks}


@register_architecture("small_cnn")
def small_cnn(tasks: Sequence[TaskSpec], width: int = 16, in_channels: int = 3) -> MultiTaskWrapper:
    """A 5-layer CNN encoder (output stride 4) with a fusion head per task; trains on a CPU."""
    width = _check_int("width", width, 1, 512)
    encoder = SmallCNN(width, _check_int("in_channels", in_channels, 1, 64))
    return MultiTaskWrapper(encoder, _heads(tasks, encoder.out_channels, width, "dense"), tasks)


def _resnet(depth: int, tasks: Sequence[TaskSpec], output_stride: int, head: str, head_width: int,
            in_channels: int) -> MultiTaskWrapper:
    encoder = ResNetTrunk(depth, output_stride, _check_int("in_channels", in_channels, 1, 64))
    head_width = _check_int("head_width", head_width, 1, 4096)
    extra = {"rates": (12, 24, 36) if output_stride == 8 else (6, 12, 18)} if head == "aspp" else {}
    return MultiTaskWrapper(encoder, _heads(tasks, encoder.out_channels, head_width, head, **extra),
                            tasks)


@register_architecture("resnet18")
def resnet18(tasks: Sequence[TaskSpec], output_stride: int = 8, head: str = "dense",
             head_width: int = 128, in_channels: int = 3) -> MultiTaskWrapper:
    """Dilated ResNet-18 trunk (output stride 8 or 16), a "dense" (fusion) or "aspp" head per task."""
    return _resnet(18, tasks, output_stride, head, head_width, in_channels)


@register_architecture("resnet34")
def resnet34(tasks: Sequence[TaskSpec], output_stride: int = 8, head: str = "dense",
             head_width: int = 128, in_channels: int = 3) -> MultiTaskWrapper:
    """Dilated ResNet-34 trunk (output stride 8 or 16), a "dense" (fusion) or "aspp" head per task."""
    return _resnet(34, tasks, output_stride, head, head_width, in_channels)


@register_architecture("resnet50")
def resnet50(tasks: Sequence[TaskSpec], output_stride: int = 8, head: str = "aspp",
             head_width: int = 256, in_channels: int = 3) -> MultiTaskWrapper:
    """Dilated ResNet-50 trunk with a DeepLab-v3 (ASPP) head per task: the NYUv2 multi-task setup."""
    return _resnet(50, tasks, output_stride, head, head_width, in_channels)
