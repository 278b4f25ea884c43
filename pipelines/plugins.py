"""Plugins by name: built-ins, entry points and import paths, resolved where they are used.

A plugin reference is a short name (``tiny3d``, ``feddu``) or an import path (``my_pkg.nets:SlowFast``).
Short names are looked up first in the entry-point group (``fedtwin.models``, ``fedtwin.strategies``,
``fedtwin.recipes``, ``fedtwin.datasets``, ``fedtwin.partitioners``) of every installed distribution, then in the
caller's table of built-ins (themselves import paths). Only the reference string travels between
processes; each Ray worker resolves it again, so a user's class never has to pickle.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from pipelines.core.errors import FedtwinError

GROUPS = ("fedtwin.models", "fedtwin.strategies", "fedtwin.recipes", "fedtwin.datasets", "fedtwin.partitioners")


class PluginError(FedtwinError, ValueError):
    """A plugin reference that does not resolve, or resolves to the wrong kind of object."""


def add_search_paths(paths: Iterable[str]) -> None:
    """Put folders holding user plugin modules on ``sys.path`` (front, once each)."""
    for path in reversed(list(paths)):
        if path and path not in sys.path:
            sys.path.insert(0, path)


@lru_cache(maxsize=None)
def _entry_points(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def available(group: str, builtins: Mapping[str, str]) -> list[str]:
    """Every short name known for ``group`` (built-ins and installed entry points)."""
    return sorted(set(builtins) | set(_entry_points(group)))


def is_import_path(ref: str) -> bool:
    """``module.path:Attribute`` form."""
    module, sep, attr = ref.partition(":")
    return bool(sep and module and attr)


def load_plugin(
    ref: str,
    group: str,
    builtins: Mapping[str, str],
    *,
    field: str,
    check: Callable[[Any], bool] | None = None,
    expected: str = "",
) -> Any:
    """Resolve ``ref`` to an object of ``group``; errors are one line naming ``field`` and the fix.

    Args:
        ref: a short name or ``module:attr`` import path.
        group: the entry-point group, e.g. ``fedtwin.models``.
        builtins: short name -> import path of the built-in plugins of that group.
        field: the config key that holds ``ref`` (named in errors), e.g. ``model.arch``.
        check: optional shape test of the loaded object.
        expected: what ``check`` wants, for the error (e.g. "a torch.nn.Module subclass").
    """
    if not isinstance(ref, str) or not ref:
        raise PluginError(f"{field}: expected a name or a 'module:Name' import path, got {ref!r}")
    if is_import_path(ref):
        obj = _import(ref, field)
    elif ref in _entry_points(group):
        try:
            obj = _entry_points(group)[ref].load()
        except Exception as err:  # a broken third-party package must not crash with a traceback
            raise PluginError(f"{field}: entry point {ref!r} of {group} failed to load ({type(err).__name__}: {err})") from None
    elif ref in builtins:
        obj = _import(builtins[ref], field)
    else:
        choices = ", ".join(available(group, builtins))
        raise PluginError(f"{field}: unknown name {ref!r}; choose one of {choices}, or give an import path 'pkg.module:Name'")
    if check is not None and not check(obj):
        raise PluginError(f"{field}: {ref!r} resolved to {obj!r}, which is not {expected or 'the right kind of object'}")
    return obj


def _import(path: str, field: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PluginError(
            f"{field}: cannot import module {module_name!r} ({err}); install it, or list its folder in plugins.paths"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{field}: module {module_name!r} has no attribute {attr!r}") from None
    return obj
