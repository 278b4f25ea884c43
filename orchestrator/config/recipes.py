"""Recipes by name, without importing them: the config package stays a leaf of the import graph.

A recipe is a class with ``sections`` (its own top-level YAML sections, mapped to frozen dataclasses)
and a classmethod ``validate(spec)`` (checks across sections); see :mod:`fedtwin.orchestrator.recipes.base`.
``recipe:`` in YAML is a built-in name, an entry point of the ``fedtwin.recipes`` group, or an import
path ``pkg.module:MyRecipe``. Built-ins are import-path strings, so a recipe module (and the Ray and
torch code behind it) is imported only when a spec names that recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def is_recipe_class(obj: Any) -> bool:
    """Duck-typed recipe check: a class with a ``sections`` mapping and a ``validate`` classmethod."""
    return (
        isinstance(obj, type)
        and isinstance(getattr(obj, "sections", None), Mapping)
        and callable(getattr(obj, "validate", None))
    )


def recipe_class(ref: str) -> type:
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
