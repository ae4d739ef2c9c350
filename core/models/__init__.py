"""Multi-task models: the contract the engine relies on, the encoder + heads adapter, and the
architecture registry (built-ins and plugins)."""

from core.models import builtin as _builtin  # noqa: F401  (registers the built-in architectures)
from core.models.protocol import (
    ModelContractError,
    MultiTaskModel,
    ProvidesExplainLayer,
    ProvidesFeatures,
    check_model,
    explain_layer,
    has_features,
)
from core.models.registry import (
    ENTRY_POINT_GROUP,
    ArchitectureError,
    build_model,
    describe_architecture,
    get_architecture,
    list_architectures,
    load_backbone_weights,
    normalise_architecture,
    read_state_dict,
    register_architecture,
)
from core.models.wrapper import MultiTaskWrapper
from core.plugins import PluginError, load_plugins

DEFAULT_ARCHITECTURE = {"name": "small_cnn", "args": {"width": 16}}

__all__ = [
    "DEFAULT_ARCHITECTURE", "ENTRY_POINT_GROUP", "ArchitectureError", "ModelContractError",
    "MultiTaskModel", "MultiTaskWrapper", "PluginError", "ProvidesExplainLayer", "ProvidesFeatures",
    "build_model",
    "check_model", "describe_architecture", "explain_layer", "get_architecture", "has_features",
    "list_architectures",
    "load_backbone_weights", "load_plugins", "normalise_architecture", "read_state_dict",
    "register_architecture",
]
