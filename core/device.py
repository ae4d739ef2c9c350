"""Pick the compute device: CUDA, else Apple MPS, else CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def select_device(preference: str | torch.device | None = "auto") -> torch.device:
    """Return the device to run on.

    Args:
        preference: "auto" (default, or None) picks CUDA, else MPS, else CPU; "cuda", "mps"
            or "cpu" (or a torch.device) forces one and fails if it is not available.
    """
    if isinstance(preference, torch.device):
        preference = preference.type
    choice = (preference or "auto").lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {preference!r}; accepted: {', '.join(DEVICE_CHOICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if choice == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (choice == "cuda" and not cuda) or (choice == "mps" and not mps):
        raise ValueError(f"device {choice!r} is not available on this machine; use 'auto' or 'cpu'")
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    """A human-readable name of the device, e.g. 'CUDA (NVIDIA H200)' or 'CPU (2 threads)'."""
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "MPS (Apple GPU)"
    return f"CPU ({torch.get_num_threads()} threads)"
