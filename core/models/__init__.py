"""Multi-task models: a shared encoder and one head per task."""

from core.models.backbones import BACKBONES
from core.models.multitask import DEFAULT_ARCHITECTURE, MultiTaskNet

__all__ = ["BACKBONES", "DEFAULT_ARCHITECTURE", "MultiTaskNet"]
