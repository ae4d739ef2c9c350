"""Unlearning methods: one file each, all behind `Unlearner` and the registry.

    >>> from core.unlearning import get_unlearner, list_unlearners
    >>> result = get_unlearner("interference_aware", {"steps": 20}).run(model, request, data)
"""

from core.unlearning import finetune, grad_ascent, retrain  # noqa: F401  (registration)
from core.unlearning.base import (
    ConfigError,
    ProgressEvent,
    UnlearnConfig,
    Unlearner,
    UnlearningData,
    UnlearnResult,
    get_unlearner,
    list_unlearners,
    register,
)

__all__ = ["ConfigError", "ProgressEvent", "UnlearnConfig", "Unlearner", "UnlearningData",
           "UnlearnResult", "get_unlearner", "list_unlearners", "register"]
