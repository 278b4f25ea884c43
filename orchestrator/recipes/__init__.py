"""Recipes by name. Each is ``run(ctx: RecipeContext) -> summary dict``; only this registry knows names.

``RECIPES`` and ``RecipeContext`` are loaded on first access (PEP 562): the spec
(``orchestrator.config.spec``) imports each recipe's config section from ``orchestrator/recipes/<recipe>_config.py``,
which runs this file first, and the recipes themselves import the spec, so importing them here eagerly
would be circular. Add a recipe as one line in :func:`_registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.run.context import RecipeContext


def _registry() -> dict[str, Callable[[RecipeContext], dict[str, Any]]]:
    from orchestrator.recipes.federated.recipe import run_federated
    from orchestrator.recipes.incremental.recipe import run_incremental
    from orchestrator.recipes.mutual.recipe import run_mutual
    from orchestrator.recipes.transfer.recipe import run_transfer

    return {
        "federated": run_federated,
        "incremental": run_incremental,
        "mutual": run_mutual,
        "transfer": run_transfer,
    }


def __getattr__(name: str) -> Any:
    if name == "RECIPES":
        value: Any = _registry()
    elif name == "RecipeContext":
        from orchestrator.run.context import RecipeContext as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = ["RECIPES", "RecipeContext"]
