"""A spec holds the common sections plus its recipe's, and no other recipe's.

The recipes here are the stand-ins of ``fake_recipes`` put in place of the built-ins, so these tests
are about the config rules only; ``test_config.py`` runs the same rules on the real recipes.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from fedtwin.orchestrator.config import BUILTIN_RECIPES, ConfigError, ExperimentSpec, TrainConfig
from fedtwin.orchestrator.config.recipes import BUILTIN_SECTIONS
from fedtwin.orchestrator.recipes.federated.config import FederationConfig, StrategyConfig

FAKES = "tests.orchestrator.config.fake_recipes"


@pytest.fixture(autouse=True)
def fake_builtins(monkeypatch):
    monkeypatch.setitem(BUILTIN_RECIPES, "federated", f"{FAKES}:FakeFederated")
    monkeypatch.setitem(BUILTIN_RECIPES, "mutual", f"{FAKES}:FakeMutual")
    monkeypatch.setitem(BUILTIN_RECIPES, "incremental", f"{FAKES}:FakeIncremental")
    monkeypatch.setitem(BUILTIN_RECIPES, "transfer", f"{FAKES}:NotARecipe")  # skipped when looking for owners
    for name in list(BUILTIN_SECTIONS):  # the fakes stand in for the torch-free declarations too
        monkeypatch.delitem(BUILTIN_SECTIONS, name)


def test_default_spec_has_the_federated_sections_in_order():
    # Execute
    spec = ExperimentSpec()
    # Assert
    assert list(spec.sections) == ["training", "federation", "strategy"]
    assert (
        spec.federation == FederationConfig() and spec.strategy == StrategyConfig() and spec.training == TrainConfig()
    )
    assert list(spec.to_dict()) == [
        "name",
        "recipe",
        "seed",
        "data",
        "model",
        "training",
        "federation",
        "strategy",
        "resources",
        "ray",
        "run",
        "plugins",
    ]


def test_to_dict_of_a_federated_spec_holds_no_other_recipe_section():
    # Prepare
    spec = ExperimentSpec.from_dict({"federation": {"num_rounds": 3}})
    # Execute
    data = spec.to_dict()
    # Assert
    assert not {"twin", "incremental", "transfer"} & set(data)
    assert ExperimentSpec.from_dict(data) == spec


def test_mutual_spec_has_only_twin():
    # Execute
    spec = ExperimentSpec.from_dict({"recipe": "mutual", "twin": {"epochs": 4}})
    # Assert
    assert list(spec.sections) == ["twin"] and spec.twin.epochs == 4
    assert not {"training", "federation", "strategy"} & set(spec.to_dict())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"twin": {"epochs": 3}},
            "twin: not a section of recipe 'federated' (it belongs to recipe 'mutual'); "
            "remove it or set recipe: mutual",
        ),
        (
            {"recipe": "mutual", "federation": {}},
            "federation: not a section of recipe 'mutual' (it belongs to recipe 'federated')",
        ),
        (
            {"recipe": "mutual", "training": {}},
            "training: not a section of recipe 'mutual' (it belongs to recipes 'federated', 'incremental'); "
            "remove it or set recipe: federated or incremental",
        ),
        ({"federaton": {}}, "federaton: unknown key (did you mean 'federation'?); recipe 'federated' allows:"),
        ({"sections": {}}, "sections: unknown key"),
        ({"federation": None}, "federation: expected a mapping, got NoneType None"),
        ({"federation": {"num_rounds": 0}}, "federation.num_rounds: must be >= 1, got 0"),
        ({"strategy": {"name": "nope"}}, "strategy.name: unknown strategy 'nope'"),  # the recipe's validate
        ({"recipe": "nope"}, "recipe: unknown name 'nope'; choose one of"),
        ({"recipe": f"{FAKES}:NotARecipe"}, "which is not a recipe class"),
        ({"recipe": "no_such_module_xyz:R"}, "recipe: cannot import module 'no_such_module_xyz'"),
        ({"name": "a/b"}, "name: must not contain '/'"),
        ({"seed": -1}, "seed: must be >= 0, got -1"),
        ({"seed": "one"}, "seed: expected an integer, got str 'one'"),
        ("federation", "<root>: expected a mapping of sections"),
    ],
)
def test_errors_are_one_line_naming_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        ExperimentSpec.from_dict(data)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_user_recipe_by_import_path_gets_its_sections_and_validate():
    # Execute
    spec = ExperimentSpec.from_dict({"recipe": f"{FAKES}:Loop", "loop": {"steps": 7}})
    # Assert
    assert spec.loop.steps == 7 and list(spec.to_dict())[5] == "loop"
    with pytest.raises(ConfigError, match="loop.steps: at most 100"):
        spec.with_overrides({"loop.steps": 101})
    with pytest.raises(ConfigError, match="loop.steps: must be >= 1"):
        spec.with_overrides({"loop.steps": 0})


def test_missing_section_is_an_attribute_error_naming_the_recipe():
    # Prepare
    spec = ExperimentSpec.from_dict({"recipe": "mutual"})
    # Execute / Assert
    with pytest.raises(
        AttributeError, match=r"'federation' is not a section of recipe 'mutual' \(its sections: twin\)"
    ):
        spec.federation  # noqa: B018
    assert not hasattr(spec, "training") and hasattr(spec, "twin") and "twin" in dir(spec)


def test_spec_is_frozen_picklable_and_copyable():
    # Prepare
    spec = ExperimentSpec.from_dict({"federation": {"num_rounds": 4}, "strategy": {"params": {"a": 1}}})
    # Execute
    clones = [pickle.loads(pickle.dumps(spec)), copy.deepcopy(spec), copy.copy(spec)]
    # Assert
    for clone in clones:
        assert clone == spec and clone.federation.num_rounds == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.sections["federation"] = FederationConfig()  # type: ignore[index]


def test_overrides_and_replace_revalidate():
    # Prepare
    spec = ExperimentSpec()
    # Execute
    changed = spec.with_overrides({"federation.num_rounds": 7, "strategy.params.server_lr": 0.5, "seed": 2})
    replaced = spec.replace(name="x", federation=FederationConfig(num_rounds=2))
    # Assert
    assert changed.federation.num_rounds == 7 and changed.strategy.params == {"server_lr": 0.5} and changed.seed == 2
    assert replaced.name == "x" and replaced.federation.num_rounds == 2 and replaced.training == spec.training
    with pytest.raises(ConfigError, match="twin: not a section of recipe 'federated'"):
        spec.with_overrides({"twin.epochs": 3})
    with pytest.raises(ConfigError, match="federation.num_rounds: must be >= 1"):
        spec.replace(federation={"num_rounds": 0})


def test_direct_construction_fills_defaults_and_coerces_mappings():
    # Execute
    spec = ExperimentSpec(recipe="mutual", sections={"twin": {"lr": 0.01}})
    # Assert
    assert spec.twin.lr == 0.01 and spec.twin.epochs == 10
    assert spec == ExperimentSpec.from_dict({"recipe": "mutual", "twin": {"lr": 0.01}})
    with pytest.raises(ConfigError, match="twin: not a section of recipe 'federated'"):
        ExperimentSpec(sections={"twin": {}})


def test_data_plugin_fields_default_to_generated_digits():
    # Execute
    spec = ExperimentSpec.from_dict({"data": {"dataset": "my_pkg.data:make", "dataset_params": {"n": 3}}})
    # Assert
    assert ExperimentSpec().data.dataset is None and ExperimentSpec().data.dataset_params == {}
    assert spec.data.dataset == "my_pkg.data:make" and spec.data.dataset_params == {"n": 3}
    with pytest.raises(ConfigError, match="data.dataset: must be a plugin name"):
        ExperimentSpec.from_dict({"data": {"dataset": " "}})
