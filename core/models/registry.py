"""Architectures by name, in the manner of torchvision's `register_model` / `list_models`.

A builder is `builder(tasks, **args) -> MultiTaskModel`; `@register_architecture("name")`
registers it (a duplicate name is refused). A model card's `architecture` is
{"name": ..., "args": {...}, "plugin": module or None}, and `build_model` rebuilds the model from
it, so checkpoints, the retrain oracle and `mtu train` all build through here.

A user's own architectures come from plugins (`core.plugins`): a module that registers builders
when imported, named with `--plugin MODULE` (or the dashboard's plugin setting), or declared by an
installed package under the entry-point group `mtunlearn.architectures`, loaded when the
architectures are first read. A card records the plugin that built its model; nothing named in a
card is ever imported by itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.models.protocol import MultiTaskModel, check_model
from core.plugins import ARCHITECTURES, entry_point_errors, load_entry_points, plugin_of
from core.tasks import TaskSpec

ENTRY_POINT_GROUP = ARCHITECTURES

Builder = Callable[..., nn.Module]


class ArchitectureError(ValueError):
    """An unknown architecture, bad builder arguments, or an architecture whose plugin is not loaded."""


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: Builder
    plugin: str | None  # the module that registered it, None for the built-ins
    summary: str

    def arguments(self) -> dict[str, Any]:
        """{argument: default (inspect.Parameter.empty when required)} beyond `tasks`."""
        params = list(inspect.signature(self.builder).parameters.values())[1:]
        return {p.name: p.default for p in params
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(name: str, summary: str = "") -> Callable[[Builder], Builder]:
    """Decorator: register `builder(tasks, **args)` under `name`; a taken name is refused."""

    def decorate(builder: Builder) -> Builder:
        if not name or not isinstance(name, str):
            raise ArchitectureError(f"an architecture needs a non-empty name, got {name!r}")
        if name in _REGISTRY:
            raise ArchitectureError(f"an architecture named {name!r} is already registered "
                                    f"(by {_REGISTRY[name].plugin or 'mtunlearn'})")
        plugin = plugin_of(builder.__module__)
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Architecture(name, builder, plugin, summary or (doc[0] if doc else ""))
        return builder

    return decorate


def unregister_architecture(name: str) -> None:
    """Remove a registered name (for tests and plugin reloads)."""
    _REGISTRY.pop(name, None)


def list_architectures() -> list[str]:
    load_entry_points(ARCHITECTURES)
    return sorted(_REGISTRY)


def get_architecture(name: str, plugin: str | None = None) -> Architecture:
    load_entry_points(ARCHITECTURES)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if plugin:
        raise ArchitectureError(
            f"architecture {name!r} comes from the plugin module {plugin!r}, which is not loaded: "
            f"pass --plugin {plugin} (dashboard: Model page, plugin modules), or install the "
            f"package that declares it under the {ENTRY_POINT_GROUP!r} entry point")
    raise ArchitectureError(f"unknown architecture {name!r}; registered: "
                            f"{', '.join(sorted(_REGISTRY))}{entry_point_errors(ARCHITECTURES)}")


def normalise_architecture(architecture: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"name", "args", "plugin"} from a card's architecture (also the older
    {"backbone": name, "width": w, ...} form of the first cards)."""
    if architecture is None:
        return {"name": "small_cnn", "args": {}, "plugin": None}
    if not isinstance(architecture, Mapping):
        raise ArchitectureError(f"architecture must be an object like "
                                f"{{\"name\": \"small_cnn\", \"args\": {{}}}}, got {architecture!r}")
    data = dict(architecture)
    if "name" not in data and "backbone" in data:
        name = data.pop("backbone")
        return {"name": name, "args": data, "plugin": None}
    unknown = sorted(set(data) - {"name", "args", "plugin"})
    if unknown or not isinstance(data.get("name"), str):
        raise ArchitectureError(f"architecture {architecture!r} must have a string \"name\" and "
                                f"optionally \"args\" and \"plugin\"; unexpected: {unknown}")
    args = data.get("args") or {}
    if not isinstance(args, Mapping):
        raise ArchitectureError(f"architecture args must be an object, got {args!r}")
    plugin = data.get("plugin")
    if plugin is not None and not isinstance(plugin, str):
        raise ArchitectureError(f"architecture plugin must be a module name, got {plugin!r}")
    return {"name": data["name"], "args": dict(args), "plugin": plugin}


def describe_architecture(architecture: Mapping[str, Any]) -> str:
    """One line, e.g. "resnet18 (output_stride=8, head=aspp) from plugin my_models"."""
    spec = normalise_architecture(architecture)
    args = ", ".join(f"{k}={v}" for k, v in spec["args"].items())
    plugin = f" from plugin {spec['plugin']}" if spec["plugin"] else ""
    return f"{spec['name']}{f' ({args})' if args else ''}{plugin}"


def build_model(architecture: Mapping[str, Any] | None, tasks: Sequence[TaskSpec]) -> MultiTaskModel:
    """A fresh model (random init) for `tasks` from an architecture spec; `.architecture` is set
    to the normalised spec with every argument (defaults included) and the plugin that
    registered the builder."""
    spec = normalise_architecture(architecture)
    entry = get_architecture(spec["name"], spec["plugin"])
    tasks = list(tasks)
    try:
        inspect.signature(entry.builder).bind(tasks, **spec["args"])
    except TypeError as error:
        accepted = ", ".join(f"{k}={'<required>' if v is inspect.Parameter.empty else repr(v)}"
                             for k, v in entry.arguments().items())
        raise ArchitectureError(f"architecture {entry.name!r} does not take args {spec['args']}: "
                                f"{error}; accepted: {accepted or 'none'}") from error
    model = entry.builder(tasks, **spec["args"])
    defaults = {k: v for k, v in entry.arguments().items()
                if isinstance(v, (bool, int, float, str, type(None)))}  # recorded, so a later
    args = {**defaults, **spec["args"]}  # change of a builder's default cannot change the model
    model.architecture = {"name": entry.name, "args": args, "plugin": entry.plugin}
    check_model(model)
    built = list(getattr(model, "tasks", {}))
    if built != [task.name for task in tasks]:
        raise ArchitectureError(f"architecture {entry.name!r} built a model with tasks {built}, "
                                f"expected {[task.name for task in tasks]}")
    return model


# -------------------------------------------------------------- pretrained backbone weights


def read_state_dict(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a state-dict file, never unpickling arbitrary objects: `.safetensors`, or
    `.pt` / `.pth` / `.bin` through `torch.load(weights_only=True)` (a {"state_dict": ...} or
    {"model": ...} wrapper is opened). `prefix` (e.g. "module.") is stripped where present."""
    path = Path(path)
    if not path.is_file():
        raise ArchitectureError(f"state dict file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ArchitectureError(f"{path} is not a readable safetensors file: {error}") from error
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # weights_only refuses any object it would have to unpickle
            raise ArchitectureError(f"{path} is not a plain tensor state dict (read with "
                                    f"weights_only=True): {error}") from error
    else:
        raise ArchitectureError(f"{path}: unknown state dict format {path.suffix!r}; accepted: "
                                ".safetensors, .pt, .pth, .bin")
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping) and len(state) <= 4:
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArchitectureError(f"{path} holds no state dict of tensors")
    return {(k[len(prefix):] if prefix and k.startswith(prefix) else k): v for k, v in state.items()}


def load_backbone_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load pretrained weights for the shared encoder (e.g. a torchvision ImageNet `.pth` file
    the user downloaded) into `model.encoder`. Keys the encoder lacks (a classifier's `fc.*`) are
    skipped and returned; a missing encoder key or a shape mismatch raises."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ArchitectureError(f"{type(model).__name__} has no `encoder` to load backbone weights into")
    state = read_state_dict(path)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    shapes = [f"{k}: encoder {tuple(expected[k].shape)} vs file {tuple(state[k].shape)}"
              for k in sorted(set(expected) & set(state)) if expected[k].shape != state[k].shape]
    if missing or shapes:
        raise ArchitectureError(f"backbone weights {path} do not fit the encoder: missing "
                                f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, shape "
                                f"mismatches {shapes[:8]}")
    encoder.load_state_dict({k: state[k] for k in expected})
    return {"skipped": sorted(set(state) - set(expected))}
