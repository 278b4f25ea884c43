"""Model architectures by name, without torch: the lookup that the ``model:`` section and the networks share.

``ModelConfig.arch`` names a built-in (``tiny3d``, ``c3d``), an entry point of the ``fedtwin.models``
group, or an import path ``"pkg.module:Name"``. A model plugin is a callable ``plugin(cfg) -> nn.Module``,
usually an ``nn.Module`` subclass whose ``__init__`` takes the config; it may declare
``default_widths`` and ``default_input_pool`` (see :mod:`fedtwin.pipelines.model.networks`).

This module imports neither torch nor the networks module, so a spec loads and prints without them:

- a built-in's defaults are the table ``BUILTIN_ARCH_DEFAULTS``, their one source (the networks build
  ``TINY3D`` and ``C3D`` from it), and the built-in itself is an import path, imported only when a model
  is built;
- a plugin is imported when the ``model:`` section is built, to read its defaults and to fail early on a
  typo or a wrong shape; whether the plugin's own module imports torch is up to it. The shape check
  needs no import either: a class can only subclass ``torch.nn.Module`` once torch has been imported.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from fedtwin.pipelines.plugins import load_plugin

MODEL_GROUP = "fedtwin.models"
#: The built-in model plugins (the ``builtins`` table of the ``fedtwin.models`` group), imported on use.
BUILTIN_ARCHS: dict[str, str] = {
    "tiny3d": "fedtwin.pipelines.model.networks:TINY3D",
    "c3d": "fedtwin.pipelines.model.networks:C3D",
}
#: ``(default_widths, default_input_pool)`` of each built-in architecture (``networks.MODELS``).
BUILTIN_ARCH_DEFAULTS: dict[str, tuple[tuple[int, ...], int]] = {
    "tiny3d": ((8, 16, 32), 2),
    "c3d": ((32, 64, 128, 256), 1),
}
#: Defaults for ``widths`` and ``input_pool`` of a plugin that declares none.
GENERIC_WIDTHS: tuple[int, ...] = (8, 16, 32)
GENERIC_INPUT_POOL = 1


def takes_config(obj: Any) -> bool:
    """A model plugin's shape: a ``torch.nn.Module`` subclass, or another callable taking one argument."""
    if not callable(obj):
        return False
    if isinstance(obj, type):
        torch = sys.modules.get("torch")  # a Module subclass exists only after its module imported torch
        if torch is None or not issubclass(obj, torch.nn.Module):
            return False
    try:
        inspect.signature(obj).bind(None)
    except TypeError:
        return False
    except ValueError:  # no introspectable signature (some C callables): let the call decide
        pass
    return True


def resolve_arch(arch: str, *, field: str = "model.arch") -> Any:
    """The model plugin named by ``arch``: a callable ``(ModelConfig) -> torch.nn.Module``.

    A built-in imports the networks module (and torch); a plugin imports its own module.

    Raises:
        PluginError: one line naming ``field``: unknown name, unimportable module, or an object that
            is not an ``nn.Module`` subclass or factory taking the ``ModelConfig``.
    """
    return load_plugin(
        arch,
        MODEL_GROUP,
        BUILTIN_ARCHS,
        field=field,
        check=takes_config,
        expected="a torch.nn.Module subclass or a factory taking the ModelConfig (cfg) -> nn.Module",
        kind="model",
    )


def arch_defaults(arch: str) -> tuple[tuple[int, ...], int]:
    """``(widths, input_pool)`` defaults of ``arch``: from the table for a built-in, else from the plugin.

    Raises:
        PluginError: naming ``arch`` (the loader adds ``model.``) when a plugin does not resolve.
    """
    if arch in BUILTIN_ARCH_DEFAULTS:
        return BUILTIN_ARCH_DEFAULTS[arch]
    plugin = resolve_arch(arch, field="arch")
    widths = tuple(getattr(plugin, "default_widths", GENERIC_WIDTHS))
    return widths, int(getattr(plugin, "default_input_pool", GENERIC_INPUT_POOL))
