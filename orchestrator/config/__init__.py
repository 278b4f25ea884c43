"""Experiment configuration: YAML files -> a validated, frozen :class:`ExperimentSpec`.

A leaf package: it imports no recipe. Modules by responsibility:

- :mod:`~fedtwin.orchestrator.config.loader`: strict dict -> dataclass mapping, dotted overrides, ``--set`` parsing.
- :mod:`~fedtwin.orchestrator.config.sections`: the common sections (data, resources, ray, run, plugins) and
  :class:`TrainConfig`, the local-training section recipes share.
- :mod:`~fedtwin.orchestrator.config.spec`: :class:`ExperimentSpec` (common sections + the recipe's own).
- :mod:`~fedtwin.orchestrator.config.files`: reading YAML files, ``base:`` inheritance.
- :mod:`~fedtwin.orchestrator.config.recipes`: recipe classes by name or import path, imported on demand.

The names below load on first access (PEP 562), so ``import fedtwin.orchestrator.config.loader`` (the CLI's
first import) does not pull in torch through the model config.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "loader",
    "apply_overrides": "loader",
    "parse_set_option": "loader",
    "parse_set_options": "loader",
    "deep_merge": "files",
    "load_with_bases": "files",
    "read_mapping": "files",
    "BUILTIN_RECIPES": "recipes",
    "recipe_class": "recipes",
    "DataConfig": "sections",
    "PluginsConfig": "sections",
    "RayConfig": "sections",
    "ResourcesConfig": "sections",
    "RunConfig": "sections",
    "TrainConfig": "sections",
    "ExperimentSpec": "spec",
    "Sections": "spec",
    "ModelConfig": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
