"""What the recipes that read a model's features share (``mutual``, ``incremental``, ``transfer``).

Their model must offer the feature taps (``forward_features``, ``classify``, a Linear ``head``); a
plain classifier plugin fails in :meth:`FeatureModelRecipe.check_model` (part of ``preflight`` and of
loading a sweep), before Ray starts, with one line. The check resolves the model class, which imports
torch, so it is not part of loading a spec. Each of these recipes counts its steps with one key of its
section (``step_count``).
"""

from __future__ import annotations

import functools
from typing import ClassVar

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.base import Recipe
from fedtwin.pipelines.plugins import PluginError


class FeatureModelRecipe(Recipe):
    """A recipe whose model must offer the feature taps and whose step count is one spec value.

    Class attributes:
        step_count: dotted attribute path of the step count in the spec, e.g. ``"incremental.tasks"``.
    """

    step_count: ClassVar[str]

    @classmethod
    def steps(cls, spec: ExperimentSpec) -> int:
        """The value at ``step_count`` (tasks, adaptation epochs or sessions)."""
        return int(functools.reduce(getattr, cls.step_count.split("."), spec))

    @classmethod
    def check_model(cls, spec: ExperimentSpec) -> None:
        """The model's feature taps (one line naming ``model.arch``); part of ``preflight``."""
        from fedtwin.pipelines.model.networks import check_feature_api

        try:
            check_feature_api(spec.model)
        except PluginError as err:
            raise ConfigError(str(err)) from None
