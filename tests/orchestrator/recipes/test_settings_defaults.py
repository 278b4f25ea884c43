"""One default per knob: the actors receive the YAML sections themselves, and every piece built from a
section with defaults of its own (an algorithm's constructor, a derived settings object) has the same ones.

A knob whose default lives in two places can drift; these tests fail when it does.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, get_type_hints

import pytest

from fedtwin.actors.incremental.trainer import IncrementalTrainer
from fedtwin.actors.mutual.twin_network import TwinNetwork
from fedtwin.actors.transfer.trainer import TransferTrainer
from fedtwin.orchestrator.recipes.incremental.recipe import IncrementalRecipe
from fedtwin.orchestrator.recipes.mutual.recipe import MutualRecipe
from fedtwin.orchestrator.recipes.transfer.recipe import TransferRecipe
from fedtwin.pipelines.incremental.exemplar_memory import ExemplarMemory
from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector
from fedtwin.pipelines.incremental.objective import TRAJECTORY_HOOKS
from fedtwin.pipelines.incremental.settings import (
    METHODS,
    TRAJECTORY_NAMES,
    IncrementalConfig,
    IncrementalLossSettings,
    MemorySettings,
    ObjectiveSettings,
)
from fedtwin.pipelines.mutual.augment import AUGMENTATIONS
from fedtwin.pipelines.mutual.ema import EmaSchedule
from fedtwin.pipelines.mutual.settings import AUGMENTATION_NAMES, EmaSettings, TwinConfig
from fedtwin.pipelines.transfer.gradient_mixing import GradientMixer
from fedtwin.pipelines.transfer.history_bank import HistoryBank
from fedtwin.pipelines.transfer.settings import BankConfig, MixingConfig, VerificationConfig
from fedtwin.pipelines.transfer.verification import verify_predictions


def _defaults(target: type | Callable[..., Any]) -> dict[str, Any]:
    """Default of every field (a dataclass) or keyword parameter (a class's ``__init__`` or a function)."""
    if dataclasses.is_dataclass(target):
        out = {}
        for f in dataclasses.fields(target):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
    params = inspect.signature(target.__init__ if isinstance(target, type) else target).parameters
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize(
    ("actor", "parameters", "recipe"),
    [
        (TwinNetwork, ("twin",), MutualRecipe),
        (IncrementalTrainer, ("incremental", "training"), IncrementalRecipe),
        (TransferTrainer, ("transfer",), TransferRecipe),
    ],
    ids=["mutual", "incremental", "transfer"],
)
def test_actors_receive_the_recipe_sections_themselves(actor, parameters, recipe):
    hints = get_type_hints(actor.__init__)
    for name in parameters:
        assert hints[name] is recipe.sections[name], f"{actor.__name__}({name}=...) is not the {name!r} section"


def test_actor_modules_define_no_settings_of_their_own():
    import fedtwin.actors.incremental.trainer as inc
    import fedtwin.actors.mutual.twin_network as twin
    import fedtwin.actors.transfer.trainer as tr

    for module in (twin, inc, tr):
        own = [
            name
            for name, obj in vars(module).items()
            if dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__ and obj.__name__.endswith("Settings")
        ]
        assert not own, f"{module.__name__} mirrors a section: {own}"


#: (built from the section, the section, {parameter of the built thing: field of the section})
MIRRORS: list[tuple[Any, type, Mapping[str, str]]] = [
    (
        ObjectiveSettings,
        IncrementalLossSettings,
        {
            "alpha": "alpha",
            "weight": "distill_weight",
            "pool": "pool",
            "temporal_mode": "temporal_mode",
            "normalize": "normalize",
            "preprocess": "preprocess",
            "layers": "distill_layers",
            "trajectory": "trajectory",
            "kd_temperature": "kd_temperature",
        },
    ),
    (KeyFrameSelector, MemorySettings, {"delta": "keyframe_delta", "rho": "keyframe_rho"}),
    (ExemplarMemory, MemorySettings, {"per_class_quota": "per_class_quota", "ranking": "ranking"}),
    (EmaSchedule, EmaSettings, {"unit": "unit", "momentum": "momentum"}),
    (
        GradientMixer,
        MixingConfig,
        {n: n for n in ("mode", "w_min", "w_max", "project", "granularity", "replay_weight")},
    ),
    (HistoryBank, BankConfig, {"policy": "policy", "n_compare": "n_compare", "per_class_quota": "per_class_quota"}),
    (
        verify_predictions,
        VerificationConfig,
        {"conf_threshold": "conf_threshold", "keep_true_negatives": "keep_true_negatives"},
    ),
]


@pytest.mark.parametrize(("built", "section", "names"), MIRRORS, ids=[m[0].__name__ for m in MIRRORS])
def test_what_is_built_from_a_section_defaults_to_the_sections_values(built, section, names):
    mine, theirs = _defaults(built), _defaults(section)
    for param, fld in names.items():
        if param in mine:  # a required parameter has no default to drift
            assert mine[param] == theirs[fld], f"{built.__name__}.{param}={mine[param]!r} but {fld}={theirs[fld]!r}"


def test_the_default_methods_objective_is_the_objective_settings_default():
    assert ObjectiveSettings() == IncrementalConfig().objective()
    assert _defaults(ObjectiveSettings)["distillation"] == METHODS[_defaults(IncrementalConfig)["method"]].distillation


def test_the_once_drifted_defaults_have_one_value_each():
    # twin lr, key-frame rho, balanced CE and the memory mode: the values the studies ran with
    assert TwinConfig().adaptation.lr == 1e-3
    assert MemorySettings().keyframe_rho == KeyFrameSelector().rho == 1.5
    assert IncrementalLossSettings().balanced_ce is True
    assert MemorySettings().mode == "auto" and IncrementalConfig().resolved_memory_mode == "keyframes"


def test_name_tables_of_the_torch_free_sections_match_the_registries():
    assert tuple(AUGMENTATIONS) == AUGMENTATION_NAMES
    assert tuple(TRAJECTORY_HOOKS) == TRAJECTORY_NAMES
