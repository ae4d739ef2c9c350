"""Architectures by name, in the manner of torchvision's `register_model` / `list_models`.

A builder is `builder(tasks, **args) -> MultiTaskModel`; `@register_architecture("name")`
registers it (a duplicate name is refused). A model card's `architecture` is
{"name": ..., "args": {...}, "plugin": module or None}, and `build_model` rebuilds the model from
it, so checkpoints, the retrain oracle and `mtu train` all build through here.

A user's own architectures come from plugins: a module that registers builders when imported,
named with `--plugin MODULE` (or the dashboard's plugin setting), or declared by an installed
package under the entry-point group `mtunlearn.architectures`. A card records the plugin that
built its model; nothing named in a card is ever imported by itself.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.models.protocol import MultiTaskModel, check_model
from core.tasks import TaskSpec

ENTRY_POINT_GROUP = "mtunlearn.architectures"

Builder = Callable[..., nn.Module]


class ArchitectureError(ValueError):
    """An unknown architecture, bad builder arguments, or a plugin that cannot be loaded."""


class PluginError(ArchitectureError):
    """A plugin module or entry point that cannot be imported: not found, named like a file path,
    or raising (SyntaxError, any exception, even `sys.exit`) while it is imported."""


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
_entry_points_loaded = False
_entry_point_errors: dict[str, str] = {}


def register_architecture(name: str, summary: str = "") -> Callable[[Builder], Builder]:
    """Decorator: register `builder(tasks, **args)` under `name`; a taken name is refused."""

    def decorate(builder: Builder) -> Builder:
        if not name or not isinstance(name, str):
            raise ArchitectureError(f"an architecture needs a non-empty name, got {name!r}")
        if name in _REGISTRY:
            raise ArchitectureError(f"an architecture named {name!r} is already registered "
                                    f"(by {_REGISTRY[name].plugin or 'mtunlearn'})")
        module = builder.__module__
        plugin = None if module.split(".")[0] == "core" else module
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Architecture(name, builder, plugin, summary or (doc[0] if doc else ""))
        return builder

    return decorate


def unregister_architecture(name: str) -> None:
    """Remove a registered name (for tests and plugin reloads)."""
    _REGISTRY.pop(name, None)


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import each plugin module (which registers its builders), after the installed entry
    points. Returns the architecture names now registered.

    Raises PluginError when an entry point or a module fails to import (whatever it raises,
    `SystemExit` included; only KeyboardInterrupt goes through) or when a module is named like a
    file path: a broken plugin stops the command rather than leaving it half set up."""
    _load_entry_points()
    if _entry_point_errors:
        broken = "; ".join(f"entry point {name!r} failed ({failure})"
                           for name, failure in _entry_point_errors.items())
        raise PluginError(f"{broken} (group {ENTRY_POINT_GROUP!r}); fix or uninstall the package "
                          "that declares it")
    for module in modules:
        module = module.strip()
        if not module:
            continue
        _check_module_name(module)
        try:
            importlib.import_module(module)
        except KeyboardInterrupt:
            raise
        except ModuleNotFoundError as error:
            if error.name is None or not (module == error.name or module.startswith(error.name + ".")):
                raise PluginError(f"plugin module {module!r} {_raised(error)}") from error
            raise PluginError(f"plugin module {module!r} cannot be imported: {error}; "
                              "install it or put its folder on PYTHONPATH") from error
        except BaseException as error:  # even sys.exit: a plugin must not end the tool
            raise PluginError(f"plugin module {module!r} {_raised(error)}") from error
    return list_architectures()


def _check_module_name(module: str) -> None:
    """Refuse a file path (`./my_models.py`, `a/b`, `../x`) where a module name is expected."""
    if not ("/" in module or "\\" in module or module.startswith(".") or module.endswith(".py")):
        return
    stem = Path(module.replace("\\", "/")).name.removesuffix(".py").strip(".") or "my_models"
    raise PluginError(f"plugin {module!r} looks like a file path; a plugin is named by its module "
                      f"name (e.g. {stem}), importable from PYTHONPATH (add its folder there)")


def _raised(error: BaseException) -> str:
    """"raised ValueError while being imported: first line of its message"."""
    if isinstance(error, SystemExit):
        return f"raised SystemExit while being imported: it called sys.exit({error.code!r})"
    lines = str(error).strip().splitlines()
    return f"raised {type(error).__name__} while being imported" + (f": {lines[0]}" if lines else "")


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # named by load_plugins and get_architecture
            _entry_point_errors[point.name] = f"{point.value} {_raised(error)}"


def list_architectures() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def get_architecture(name: str, plugin: str | None = None) -> Architecture:
    _load_entry_points()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if plugin:
        raise ArchitectureError(
            f"architecture {name!r} comes from the plugin module {plugin!r}, which is not loaded: "
            f"pass --plugin {plugin} (dashboard: Model page, plugin modules), or install the "
            f"package that declares it under the {ENTRY_POINT_GROUP!r} entry point")
    broken = "".join(f"; entry point {k} failed ({v})" for k, v in _entry_point_errors.items())
    raise ArchitectureError(f"unknown architecture {name!r}; registered: "
                            f"{', '.join(sorted(_REGISTRY))}{broken}")


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
