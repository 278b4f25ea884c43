"""Recipes by name. Each is ``run(ctx: RecipeContext) -> summary dict``; only this registry knows names."""

from collections.abc import Callable
from typing import Any

from orchestrator.recipes.context import RecipeContext
from orchestrator.recipes.federated import run_federated

RECIPES: dict[str, Callable[[RecipeContext], dict[str, Any]]] = {
    "federated": run_federated,
}

__all__ = ["RECIPES", "RecipeContext"]
