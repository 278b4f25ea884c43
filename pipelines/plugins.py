"""Plugins by name: built-ins, entry points and import paths, resolved where they are used.

A plugin reference is a short name (``tiny3d``, ``feddu``) or an import path (``my_pkg.nets:SlowFast``).
Short names are looked up first in the entry-point group (``fedtwin.models``, ``fedtwin.strategies``,
``fedtwin.recipes``, ``fedtwin.datasets``, ``fedtwin.partitioners``) of every installed distribution, then in the
caller's table of built-ins. Only the reference string travels between processes; each Ray worker
resolves it again, so a user's class never has to pickle. Folders named in the ``plugins.paths`` config
section are put on ``sys.path`` in the driver (:func:`add_search_paths`) and on ``PYTHONPATH`` of the
actors, so an import path to a plain ``.py`` file next to the experiment resolves everywhere.

Every failure is a :class:`PluginError`: one line that names the config field holding the reference
and says how to fix it (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fedtwin.pipelines.core.errors import FedtwinError

GROUPS = ("fedtwin.models", "fedtwin.strategies", "fedtwin.recipes", "fedtwin.datasets", "fedtwin.partitioners")


class PluginError(FedtwinError, ValueError):
    """A plugin reference that does not resolve, or resolves to the wrong kind of object."""


def add_search_paths(paths: Iterable[str | Path]) -> None:
    """Put folders holding user plugin modules on ``sys.path`` (front, in the given order, once each)."""
    added = False
    for path in reversed([str(p) for p in paths]):
        if path and path not in sys.path:
            sys.path.insert(0, path)
            added = True
    if added:
        # A module looked up (and missed) before the folder was added must be found now.
        importlib.invalidate_caches()


@cache
def _entry_points(group: str) -> dict[str, Any]:
    """Installed entry points of ``group`` by name (read once per process; tests monkeypatch this)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def available(group: str, builtins: Mapping[str, Any]) -> list[str]:
    """Every short name known for ``group`` (built-ins and installed entry points)."""
    return sorted(set(builtins) | set(_entry_points(group)))


def is_import_path(ref: str) -> bool:
    """``module.path:Attribute`` form."""
    module, sep, attr = ref.partition(":")
    return bool(sep and module and attr)


def load_plugin(
    ref: str,
    group: str,
    builtins: Mapping[str, Any],
    *,
    field: str,
    check: Callable[[Any], bool] | None = None,
    expected: str = "",
    kind: str = "name",
) -> Any:
    """Resolve ``ref`` to an object of ``group``; errors are one line naming ``field`` and the fix.

    Args:
        ref: a short name or ``module:attr`` import path (``attr`` may be dotted, e.g. ``mod:Outer.Inner``).
        group: the entry-point group, e.g. ``fedtwin.models``.
        builtins: short name -> built-in plugin of that group, either an import path string
            (imported on first use) or the object itself.
        field: the config key that holds ``ref`` (named in errors), e.g. ``model.arch``.
        check: optional shape test of the loaded object; returning False or raising fails the lookup.
        expected: what ``check`` wants, for the error (e.g. "a torch.nn.Module subclass").
        kind: what a short name names, for the error (``unknown strategy 'x'``); default ``name``.

    Raises:
        PluginError: unknown name, unimportable module, missing attribute, broken entry point or an
            object that fails ``check``.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise PluginError(f"{field}: expected a name or a 'module:Name' import path, got {ref!r}")
    if is_import_path(ref):
        obj = _import(ref, field)
    elif ref in _entry_points(group):
        try:
            obj = _entry_points(group)[ref].load()
        except Exception as err:  # a broken third-party package must not crash with a traceback
            raise PluginError(f"{field}: entry point {ref!r} of {group} failed to load ({_one_line(err)})") from None
    elif ref in builtins:
        builtin = builtins[ref]
        obj = _import(builtin, field) if isinstance(builtin, str) else builtin
    else:
        raise PluginError(f"{field}: unknown {kind} {ref!r}; {_choices_hint(ref, group, builtins)}")
    if check is not None:
        try:
            ok = bool(check(obj))
        except Exception:  # a shape test that trips over the object means the object has the wrong shape
            ok = False
        if not ok:
            raise PluginError(
                f"{field}: {ref!r} resolved to {_describe(obj)}, which is not {expected or 'the right kind of object'}"
            )
    return obj


def _choices_hint(ref: str, group: str, builtins: Mapping[str, Any]) -> str:
    names = available(group, builtins)
    close = difflib.get_close_matches(ref, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if "." in ref and ":" not in ref:  # "pkg.mod.Name" instead of "pkg.mod:Name"
        module, _, attr = ref.rpartition(".")
        hint += f"an import path separates module and name with ':', e.g. '{module}:{attr}'; "
    return f"{hint}choose one of {', '.join(names)}, or give an import path 'pkg.module:Name'"


def _import(path: str, field: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise PluginError(
                f"{field}: cannot import module {module_name!r} (not found); install it, or list its folder in "
                "plugins.paths"
            ) from None
        raise PluginError(f"{field}: importing module {module_name!r} failed ({_one_line(err)})") from None
    except Exception as err:  # a syntax error or a crash inside the user's module
        raise PluginError(f"{field}: importing module {module_name!r} failed ({_one_line(err)})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(f"{field}: module {module_name!r} has no attribute {attr!r}{hint}") from None
    return obj


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    name = getattr(obj, "__qualname__", None)
    if callable(obj) and name:
        return f"{type(obj).__name__} {getattr(obj, '__module__', '?')}.{name}"
    return f"a {type(obj).__name__} object"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, SyntaxError) and err.filename:
        text = f"{err.msg} at {err.filename}:{err.lineno}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
