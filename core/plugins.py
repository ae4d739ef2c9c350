"""Plugins: a user's own architectures, task kinds and unlearning methods, in modules of their own.

A plugin is a module that registers things when it is imported: architectures
(`core.models.register_architecture`), task kinds (`core.tasks.register_kind`), unlearning methods
(`core.unlearning.register`); one module may register any of them. It reaches a command in one
of two ways:

- named: `--plugin MODULE` on any `mtu` command (`mtu app --plugin MODULE` for the dashboard and
  its worker) imports it first (`load_plugins`);
- installed: a package declares it under an entry-point group, `mtunlearn.architectures` or
  `mtunlearn.methods`. A group is loaded the first time its registry is read (`list_*` /
  `get_*`), and by `load_plugins`, which every command runs, so a broken one stops the command.

A card or a job records the plugin that registered what it names (`plugin_of`); nothing named
there is imported by itself, except by the dashboard's worker, among the plugins it was allowed
at start-up (`core.jobs`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

ARCHITECTURES = "mtunlearn.architectures"
METHODS = "mtunlearn.methods"
GROUPS = (ARCHITECTURES, METHODS)
"""The entry-point groups, each loaded when its registry is first read."""

_loaded: set[str] = set()
_errors: dict[str, dict[str, str]] = {}


class PluginError(ValueError):
    """A plugin module or entry point that cannot be imported: not found, named like a file path,
    or raising (SyntaxError, any exception, even `sys.exit`) while it is imported."""


def load_entry_points(group: str) -> None:
    """Load every entry point of `group` once per process (importing it registers what it
    declares); one that fails is kept for `entry_point_errors`, not raised."""
    if group in _loaded:
        return
    _loaded.add(group)
    for point in entry_points(group=group):
        try:
            point.load()
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # named by load_plugins and the registries' lookups
            _errors.setdefault(group, {})[point.name] = f"{point.value} {raised(error)}"


def entry_point_errors(group: str) -> str:
    """"; entry point NAME failed (VALUE raised ...)" for each broken entry point of `group`
    (loading it first), or ""; for the message of an unknown name."""
    load_entry_points(group)
    return "".join(f"; entry point {name} failed ({failure})"
                   for name, failure in _errors.get(group, {}).items())


def entry_point_modules() -> list[str]:
    """The modules that the installed packages declare under every group (nothing imported),
    read once per process, as the entry points themselves are (`load_entry_points`): reading
    every installed package's metadata took tens of milliseconds, and the dashboard asks on
    every rerun. A package installed later is seen after a restart."""
    return list(_declared_modules())


@functools.cache
def _declared_modules() -> tuple[str, ...]:
    return tuple(dict.fromkeys(point.module for group in GROUPS for point in entry_points(group=group)))


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Load every group's entry points, then import each plugin module (which registers what it
    defines). Returns the modules imported.

    Raises PluginError when an entry point or a module fails to import (whatever it raises,
    `SystemExit` included; only KeyboardInterrupt goes through) or when a module is named like a
    file path: a broken plugin stops the command rather than leaving it half set up."""
    for group in GROUPS:
        load_entry_points(group)
        if _errors.get(group):
            broken = "; ".join(f"entry point {name!r} failed ({failure})"
                               for name, failure in _errors[group].items())
            raise PluginError(f"{broken} (group {group!r}); fix or uninstall the package that "
                              "declares it")
    imported = []
    for module in (m.strip() for m in modules):
        if not module:
            continue
        _check_module_name(module)
        try:
            importlib.import_module(module)
        except KeyboardInterrupt:
            raise
        except ModuleNotFoundError as error:
            if error.name is None or not (module == error.name or module.startswith(error.name + ".")):
                raise PluginError(f"plugin module {module!r} {raised(error)}") from error
            raise PluginError(f"plugin module {module!r} cannot be imported: {error}; "
                              "install it or put its folder on PYTHONPATH") from error
        except BaseException as error:  # even sys.exit: a plugin must not end the tool
            raise PluginError(f"plugin module {module!r} {raised(error)}") from error
        imported.append(module)
    return imported


def plugin_of(module: str) -> str | None:
    """The plugin that registered something defined in `module`: the module itself, or None for
    mtunlearn's own (`core.*`)."""
    return None if module.split(".")[0] == "core" else module


def _check_module_name(module: str) -> None:
    """Refuse a file path (`./my_models.py`, `a/b`, `../x`) where a module name is expected."""
    if not ("/" in module or "\\" in module or module.startswith(".") or module.endswith(".py")):
        return
    stem = Path(module.replace("\\", "/")).name.removesuffix(".py").strip(".") or "my_models"
    raise PluginError(f"plugin {module!r} looks like a file path; a plugin is named by its module "
                      f"name (e.g. {stem}), importable from PYTHONPATH (add its folder there)")


def raised(error: BaseException) -> str:
    """"raised ValueError while being imported: first line of its message"."""
    if isinstance(error, SystemExit):
        return f"raised SystemExit while being imported: it called sys.exit({error.code!r})"
    lines = str(error).strip().splitlines()
    return f"raised {type(error).__name__} while being imported" + (f": {lines[0]}" if lines else "")
