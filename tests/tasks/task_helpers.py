"""Tiny hand-built specs and batches shared by the task-kind tests."""

import pytest
import torch
import torch.nn.functional as F

from core.tasks import TaskSpec

SEG = TaskSpec("segmentation", "segmentation", 4)
PARTS = TaskSpec("parts", "parts", 4, class_names=("head", "torso", "arm", "leg"))
SAL = TaskSpec("saliency", "saliency", 1)
EDGE = TaskSpec("edges", "edges", 1)
DEPTH = TaskSpec("depth", "depth", 1)
NORMAL = TaskSpec("normal", "normal", 3)
CLS = TaskSpec("label", "classification", 3, class_names=("cat", "dog", "owl"))
ALL = (SEG, PARTS, SAL, EDGE, DEPTH, NORMAL, CLS)


def approx(value):
    return pytest.approx(value, abs=1e-5)


def logits_for(labels, channels=4):
    """(B, H, W) labels -> (B, C, H, W) logits whose argmax is `labels`."""
    return 5.0 * F.one_hot(labels.clamp(min=0), channels).permute(0, 3, 1, 2).double()


def binary_logits(probabilities):
    """(B, H, W) probabilities -> (B, 1, H, W) logits."""
    p = torch.as_tensor(probabilities, dtype=torch.float64)
    return torch.logit(p)[:, None]


def unit_vectors(degrees):
    """(B, H, W) angles from +z, in the x-z plane -> (B, 3, H, W) unit vectors."""
    rad = torch.deg2rad(torch.as_tensor(degrees, dtype=torch.float64))
    return torch.stack([rad.sin(), torch.zeros_like(rad), rad.cos()], dim=1)


def no_valid_batch(spec):
    """One sample of `spec` whose target has no valid pixel."""
    if spec.kind in ("segmentation", "parts"):
        return torch.randn(1, 4, 2, 2), torch.full((1, 2, 2), -1)
    if spec.kind in ("saliency", "edges"):
        return torch.randn(1, 1, 2, 2), torch.full((1, 2, 2), -1.0)
    return {
        "depth": (torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)),
        "normal": (unit_vectors(torch.rand(1, 2, 2)).float(), torch.zeros(1, 3, 2, 2)),
        "classification": (torch.randn(1, 3), torch.tensor([-1])),
    }[spec.kind]


def valid_batch(spec, seed=0):
    """Three random samples of `spec`, with some invalid pixels; the last has none valid."""
    g = torch.Generator().manual_seed(seed)
    if spec.kind in ("segmentation", "parts"):
        target = torch.randint(-1, 4, (3, 3, 3), generator=g)
        target[2] = -1
        return torch.randn(3, 4, 3, 3, generator=g), target
    if spec.kind in ("saliency", "edges"):
        target = (torch.rand(3, 3, 3, generator=g) > 0.6).float()
        target[:, 0, 0] = -1
        target[2] = -1
        return torch.randn(3, 1, 3, 3, generator=g), target
    if spec.kind == "depth":
        target = torch.rand(3, 1, 3, 3, generator=g) * (torch.rand(3, 1, 3, 3, generator=g) > 0.3)
        target[2] = 0
        return torch.rand(3, 1, 3, 3, generator=g), target
    if spec.kind == "normal":
        target = F.normalize(torch.randn(3, 3, 3, 3, generator=g), dim=1)
        target[:, :, 0, 0] = 0
        target[2] = 0
        return torch.randn(3, 3, 3, 3, generator=g), target
    return torch.randn(3, 3, generator=g), torch.tensor([0, 2, -1])
