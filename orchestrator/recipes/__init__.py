"""Training recipes: one sub-package per recipe (``federated``, ``mutual``, ``incremental``, ``transfer``).

Each holds its config sections (``config.py``), its :class:`~fedtwin.orchestrator.recipes.base.Recipe` subclass
(``recipe.py``) and its helpers. Recipes are looked up by name through ``fedtwin.orchestrator.config.recipes``;
nothing outside a recipe's own package tests a recipe's name.
"""

from fedtwin.orchestrator.recipes.base import CheckpointState, Recipe

__all__ = ["CheckpointState", "Recipe"]
