"""Unlearning methods: one file each, all behind `Unlearner` and the registry.

    >>> from core.unlearning import get_unlearner, list_unlearners
    >>> result = get_unlearner("interference_aware", {"steps": 20}).run(model, request, data)

Every module of this package is imported here so that its `@register` runs; a new method is a
new file, nothing else to edit. A method of a user's own is the same file in a plugin module of
theirs (`core.plugins`; examples/own_method): what it needs is exported here.
"""

import importlib
import pkgutil

from core.unlearning.base import (
    ConfigError,
    MethodError,
    ProgressEvent,
    StepUnlearner,
    UnlearnConfig,
    Unlearner,
    UnlearningContext,
    UnlearningData,
    UnlearnResult,
    get_unlearner,
    knob,
    list_unlearners,
    method_class,
    register,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ConfigError", "MethodError", "ProgressEvent", "StepUnlearner", "UnlearnConfig", "Unlearner",
           "UnlearningContext", "UnlearningData", "UnlearnResult", "get_unlearner", "knob",
           "list_unlearners", "method_class", "register"]
