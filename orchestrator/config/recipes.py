"""Recipes by name, without importing them: the config package stays a leaf of the import graph.

A recipe is a class with ``sections`` (its own top-level YAML sections, mapped to frozen dataclasses)
and a classmethod ``validate(spec)`` (checks across sections); see :mod:`fedtwin.orchestrator.recipes.base`.
``recipe:`` in YAML is a built-in name, an entry point of the ``fedtwin.recipes`` group, or an import
path ``pkg.module:MyRecipe``. Built-ins are import-path strings, so a recipe module (and the Ray and
torch code behind it) is imported only when a spec names that recipe.

Loading a spec needs only a recipe's sections, its ``retired_keys`` and its ``validate``. Every built-in
recipe declares them in ``BUILTIN_SECTIONS`` and ``BUILTIN_HOOKS`` as import paths of torch-free modules
(a check that needs torch, such as the feature taps of the model, is a preflight check), so
:func:`recipe_declaration` answers for them without importing the recipe: loading, validating and
printing a spec of a built-in recipe imports neither torch nor Ray. The recipe classes take the same
objects from here, so there is one declaration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.pipelines.plugins import PluginError, available, load_plugin

GROUP = "fedtwin.recipes"

BUILTIN_RECIPES: dict[str, str] = {
    "federated": "fedtwin.orchestrator.recipes.federated.recipe:FederatedRecipe",
    "mutual": "fedtwin.orchestrator.recipes.mutual.recipe:MutualRecipe",
    "incremental": "fedtwin.orchestrator.recipes.incremental.recipe:IncrementalRecipe",
    "transfer": "fedtwin.orchestrator.recipes.transfer.recipe:TransferRecipe",
}


#: Sections of the built-in recipes that declare them without torch or Ray: key -> ``module:Class``.
#: The recipe classes take their ``sections`` from here (:func:`builtin_sections`), so there is one list.
BUILTIN_SECTIONS: dict[str, dict[str, str]] = {
    "federated": {
        "training": "fedtwin.pipelines.model.train_config:TrainConfig",
        "federation": "fedtwin.orchestrator.recipes.federated.config:FederationConfig",
        "strategy": "fedtwin.orchestrator.recipes.federated.config:StrategyConfig",
        "system": "fedtwin.orchestrator.recipes.federated.config:SystemConfig",
    },
    "mutual": {"twin": "fedtwin.pipelines.mutual.settings:TwinConfig"},
    "incremental": {
        "training": "fedtwin.pipelines.model.train_config:TrainConfig",
        "incremental": "fedtwin.pipelines.incremental.settings:IncrementalConfig",
    },
    "transfer": {"transfer": "fedtwin.pipelines.transfer.settings:TransferConfig"},
}

#: What else a built-in recipe of ``BUILTIN_SECTIONS`` declares for loading, as import paths (torch-free):
#: ``validate`` (a function ``validate(spec)``, the checks across sections) and ``retired_keys`` (a mapping,
#: see :class:`~fedtwin.orchestrator.recipes.base.Recipe`). A recipe without an entry has neither.
BUILTIN_HOOKS: dict[str, dict[str, str]] = {
    "federated": {
        "validate": "fedtwin.orchestrator.recipes.federated.config:validate",
        "retired_keys": "fedtwin.orchestrator.recipes.federated.config:RETIRED_KEYS",
    },
}


@dataclass(frozen=True)
class RecipeDeclaration:
    """What loading a spec needs from a built-in recipe of ``BUILTIN_SECTIONS``, without the recipe module.

    Attributes:
        name: the recipe's name.
        sections: its top-level sections (YAML key -> frozen dataclass).
        retired_keys: dotted keys it no longer reads, mapped to what to do instead.
        check: its checks across sections (``validate``), if any.
    """

    name: str
    sections: Mapping[str, type]
    retired_keys: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[Any], None] | None = None

    def validate(self, spec: Any) -> None:
        """The recipe's checks across sections (the same function its class's ``validate`` calls)."""
        if self.check is not None:
            self.check(spec)


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def builtin_sections(name: str) -> dict[str, type]:
    """The section classes of built-in recipe ``name`` (imports only their torch-free modules)."""
    return {key: _import(path) for key, path in BUILTIN_SECTIONS[name].items()}


def recipe_declaration(ref: str) -> Any:
    """What :class:`~fedtwin.orchestrator.config.spec.ExperimentSpec` needs of recipe ``ref``: its
    ``sections``, ``retired_keys`` and ``validate``. A :class:`RecipeDeclaration` for the recipes of
    ``BUILTIN_SECTIONS`` (no recipe import), else the recipe class itself (:func:`recipe_class`)."""
    if ref in BUILTIN_SECTIONS:
        hooks = {key: _import(path) for key, path in BUILTIN_HOOKS.get(ref, {}).items()}
        return RecipeDeclaration(ref, builtin_sections(ref), hooks.get("retired_keys", {}), hooks.get("validate"))
    return recipe_class(ref)


def is_recipe_class(obj: Any) -> bool:
    """Duck-typed recipe check: a class with a ``sections`` mapping and a ``validate`` classmethod."""
    return (
        isinstance(obj, type)
        and isinstance(getattr(obj, "sections", None), Mapping)
        and callable(getattr(obj, "validate", None))
    )


def recipe_class(ref: str) -> type[Any]:  # duck-typed (is_recipe_class); config never imports recipes/
    """The recipe class named by ``ref`` (``recipe:`` in YAML).

    Args:
        ref: a built-in name (federated, mutual, incremental, transfer), an entry point of
            ``fedtwin.recipes``, or an import path ``pkg.module:MyRecipe``.

    Raises:
        ConfigError: one line naming ``recipe`` when ``ref`` does not resolve to a recipe class.
    """
    try:
        return load_plugin(
            ref,
            GROUP,
            BUILTIN_RECIPES,
            field="recipe",
            check=is_recipe_class,
            expected="a recipe class (with a `sections` mapping and a `validate` classmethod)",
        )
    except PluginError as err:
        raise ConfigError(str(err)) from None


def recipe_names() -> list[str]:
    """Every recipe short name: built-ins and installed entry points."""
    return available(GROUP, BUILTIN_RECIPES)


def recipes_with_section(key: str) -> list[str]:
    """Short names of the known recipes that own the top-level section ``key`` (for error messages).

    This imports every known recipe, so it is only called when a spec already failed; a recipe that
    does not import is skipped, because the error being reported is about the user's key, not it.
    """
    owners = []
    for name in recipe_names():
        try:
            cls = recipe_class(name)
        except Exception:  # noqa: BLE001 - see the docstring
            continue
        if key in cls.sections:
            owners.append(name)
    return owners
