"""Unlearning methods: one file each, all behind `Unlearner` and the registry.

    >>> from core.unlearning import get_unlearner, list_unlearners
    >>> result = get_unlearner("interference_aware", {"steps": 20}).run(model, request, data)

Every module of this package is imported here so that its `@register` runs; a new method is a
new file, nothing else to edit.
"""

import importlib
import pkgutil

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

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ConfigError", "ProgressEvent", "UnlearnConfig", "Unlearner", "UnlearningData",
           "UnlearnResult", "get_unlearner", "list_unlearners", "register"]
