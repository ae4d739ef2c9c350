"""What the engine needs from a multi-task model: the `MultiTaskModel` contract.

Every module of `core` (unlearning, evaluation, explore, explain, training, checkpoints) uses a
model only through the members below, so any `torch.nn.Module` that has them can be unlearned.
`MultiTaskWrapper` gives them to the common layout (a shared encoder + one decoder per task).

Shapes: B images, 3 input channels (or the model's own), H x W pixels; C a task's channels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from core.tasks import TaskSpec


@runtime_checkable
class MultiTaskModel(Protocol):
    """A `torch.nn.Module` with one shared part and one head per task (hard parameter sharing).

    Besides the `nn.Module` API (parameters, named_parameters, named_modules, state_dict,
    load_state_dict, train / eval, to), the engine uses exactly:

    tasks: {task name: TaskSpec}, in output order; the names are the keys of `forward`'s result.
    architecture: JSON-able {"name": registered builder, "args": {...}, "plugin": module or None},
        set by `core.models.build_model`; the model card stores it so the model can be rebuilt.
    forward(images): images (B, 3, H, W) float -> {task: activated prediction}, where the
        prediction is (B, C, H, W) for a per-pixel task (`TaskSpec.per_pixel`) and (B, C) for an
        image-level one, already passed through `TaskSpec.activate`. Must run under
        `torch.func.functional_call` + `vmap` (no in-place ops on inputs, no data-dependent
        Python control flow) for the per-sample-gradient methods.
    shared_parameters(): the parameters every task's output depends on (the encoder).
    task_parameters(task): the parameters only that task's output depends on (its head); an
        unknown task raises KeyError naming the model's tasks. Shared and task parameters
        together must cover every trainable parameter, and no two tasks share a head parameter.
    """

    tasks: Mapping[str, TaskSpec]
    architecture: dict[str, Any]

    def __call__(self, images: Tensor) -> dict[str, Tensor]: ...

    def shared_parameters(self) -> Iterator[nn.Parameter]: ...

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]: ...


@runtime_checkable
class ProvidesFeatures(Protocol):
    """Optional: the encoder's feature maps, for the instance map (Select page).

    features(images): images (B, 3, H, W) -> list of feature maps [(B, C_i, h_i, w_i), ...].
    decode(features, size): those maps -> the same dict as `forward` at output size (H, W), so
        callers that want features and predictions run the encoder once.
    """

    def features(self, images: Tensor) -> list[Tensor]: ...

    def decode(self, features: Sequence[Tensor], size: tuple[int, int]) -> dict[str, Tensor]: ...


@runtime_checkable
class ProvidesExplainLayer(Protocol):
    """Optional: explain_layer() -> the shared module whose output LayerGradCam attributes (a
    module returning one (B, C, h, w) tensor), or None when the model has none."""

    def explain_layer(self) -> nn.Module | None: ...


class ModelContractError(TypeError):
    """A model that lacks a member of `MultiTaskModel`."""


def check_model(model: object) -> MultiTaskModel:
    """`model` itself when it has every member of `MultiTaskModel`; else ModelContractError
    naming the missing members."""
    required = ("tasks", "architecture", "shared_parameters", "task_parameters", "state_dict",
                "named_parameters")
    missing = [name for name in required if not hasattr(model, name)]
    if not callable(model):
        missing.append("forward")
    if missing:
        raise ModelContractError(f"{type(model).__name__} is not a MultiTaskModel: it lacks "
                                 f"{', '.join(missing)} (see core/models/protocol.py)")
    return model  # type: ignore[return-value]


def has_features(model: object) -> bool:
    """Whether `model` provides encoder features for the instance map."""
    return callable(getattr(model, "features", None)) and callable(getattr(model, "decode", None))


def explain_layer(model: object) -> nn.Module | None:
    """The model's LayerGradCam layer, or None when it declares none."""
    method = getattr(model, "explain_layer", None)
    layer = method() if callable(method) else None
    return layer if isinstance(layer, nn.Module) else None
