"""Plugin resolution: built-in names, entry points, import paths, and one-line errors naming the field."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

from fedtwin.pipelines import plugins
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.model.networks import FEATURE_API, MODELS, ModelConfig, VideoCNN, build_model, resolve_arch
from fedtwin.pipelines.plugins import PluginError, add_search_paths, load_plugin

USER_MODULE = "fedtwin_test_user_plugins"

USER_CODE = '''
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedtwin.orchestrator.recipes.federated.strategies import Strategy
from fedtwin.orchestrator.recipes.federated.strategies.fedavg import FedAvg


class MeanNet(nn.Module):
    """Clips (B, T, C, H, W) -> logits through the mean pixel of each channel (no feature taps)."""

    default_widths = (5,)
    default_input_pool = 3

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(cfg.in_channels, cfg.num_classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(1, 3, 4)))


def make_net(cfg):
    return MeanNet(cfg)


def make_nothing(cfg):
    return "not a module"


class NeedsTwo(nn.Module):
    def __init__(self, cfg, other):
        super().__init__()


class NotAModule:
    def __init__(self, cfg):
        pass


class HalfStrategy(FedAvg):
    name = "half"


class Unnamed(FedAvg):
    """Inherits FedAvg's name: summaries would mislabel it."""


class Abstract(Strategy):
    name = "abstract"


class EvenOdd:
    """Even rows to device 0, odd rows to device 1 (a toy partitioner with its own parameter)."""

    def __init__(self, offset: int = 0, min_size: int = 1):
        self.offset = offset
        self.min_size = min_size

    def get_params(self):
        return {"offset": self.offset}

    def assign(self, labels, num_devices, rng):
        return (np.arange(len(labels)) + self.offset) % num_devices
'''


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a user's plugin module, on sys.path for this module's tests only."""
    folder = tmp_path_factory.mktemp("user_plugins")
    (folder / f"{USER_MODULE}.py").write_text(textwrap.dedent(USER_CODE))
    (folder / "fedtwin_test_broken.py").write_text("def oops(:\n")
    (folder / "fedtwin_test_needs_missing.py").write_text("import fedtwin_test_no_such_dependency\n")
    add_search_paths([str(folder)])
    yield folder
    sys.path.remove(str(folder))
    for name in (USER_MODULE, "fedtwin_test_broken", "fedtwin_test_needs_missing"):
        sys.modules.pop(name, None)


@pytest.fixture()
def fake_entry_points(monkeypatch: pytest.MonkeyPatch):
    """Replace the cached entry-point table with hand-made ``EntryPoint`` objects."""
    table: dict[str, dict[str, EntryPoint]] = {}

    def register(group: str, name: str, value: str) -> None:
        table.setdefault(group, {})[name] = EntryPoint(name=name, value=value, group=group)

    monkeypatch.setattr(plugins, "_entry_points", lambda group: table.get(group, {}))
    return register


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ----------------------------------------------------------------------------------- load_plugin
def test_builtins_may_be_import_path_strings_or_objects() -> None:
    table = {"walker": "pathlib:PurePosixPath", "direct": Path}

    assert load_plugin("walker", "fedtwin.test", table, field="x.y").__name__ == "PurePosixPath"
    assert load_plugin("direct", "fedtwin.test", table, field="x.y") is Path


def test_import_path_resolves_dotted_attributes() -> None:
    assert load_plugin("os:path.join", "fedtwin.test", {}, field="x") is __import__("os").path.join


def test_entry_point_is_found_and_shadows_a_builtin(fake_entry_points) -> None:
    fake_entry_points("fedtwin.test", "walker", "pathlib:PureWindowsPath")

    assert load_plugin("walker", "fedtwin.test", {"walker": "pathlib:PurePosixPath"}, field="x").__name__ == (
        "PureWindowsPath"
    )
    assert plugins.available("fedtwin.test", {"other": Path}) == ["other", "walker"]


def test_broken_entry_point_is_one_line(fake_entry_points) -> None:
    fake_entry_points("fedtwin.test", "broken", "fedtwin_test_no_such_module:Thing")

    with pytest.raises(PluginError) as err:
        load_plugin("broken", "fedtwin.test", {}, field="model.arch")
    assert _one_line(err).startswith(
        "model.arch: entry point 'broken' of fedtwin.test failed to load (ModuleNotFoundError"
    )


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("tiny3D", "model.arch: unknown name 'tiny3D'; did you mean 'tiny3d'? choose one of c3d, tiny3d"),
        ("pkg.mod.Net", "an import path separates module and name with ':', e.g. 'pkg.mod:Net'"),
        (
            "fedtwin_test_nowhere:Net",
            "model.arch: cannot import module 'fedtwin_test_nowhere' (not found); "
            "install it, or list its folder in plugins.paths",
        ),
        (
            "fedtwin.pipelines.model.networks:VideoCnn",
            "model.arch: module 'fedtwin.pipelines.model.networks' has no attribute "
            "'VideoCnn'; did you mean 'VideoCNN'?",
        ),
        ("", "model.arch: expected a name or a 'module:Name' import path, got ''"),
    ],
)
def test_bad_references_are_one_line_errors_naming_the_field(ref: str, message: str) -> None:
    with pytest.raises(PluginError) as err:
        load_plugin(ref, "fedtwin.test.models", MODELS, field="model.arch")
    assert message in _one_line(err)
    assert isinstance(err.value, FedtwinError) and err.value.exit_code == 2  # the CLI exits 2


def test_errors_inside_the_user_module_are_one_line(user_dir: Path) -> None:
    with pytest.raises(PluginError) as err:
        load_plugin("fedtwin_test_broken:oops", "g", {}, field="model.arch")
    assert "model.arch: importing module 'fedtwin_test_broken' failed (SyntaxError:" in _one_line(err)
    assert "fedtwin_test_broken.py:1" in str(err.value)

    with pytest.raises(PluginError) as err:
        load_plugin("fedtwin_test_needs_missing:x", "g", {}, field="strategy.name")
    # The module exists; what is missing is its own dependency, so "list its folder" would mislead.
    assert "importing module 'fedtwin_test_needs_missing' failed (ModuleNotFoundError: No module named " in (
        _one_line(err)
    )


def test_wrong_shape_names_the_field_and_what_was_expected() -> None:
    with pytest.raises(PluginError) as err:
        load_plugin("math:pi", "g", {}, field="data.dataset", check=callable, expected="a callable")
    assert _one_line(err) == "data.dataset: 'math:pi' resolved to a float object, which is not a callable"

    def explodes(obj: object) -> bool:
        raise AttributeError("no")

    with pytest.raises(PluginError, match="which is not the right kind of object"):
        load_plugin("math:pi", "g", {}, field="f", check=explodes)


def test_add_search_paths_puts_folders_first_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", ["/existing"])
    add_search_paths([str(tmp_path / "a"), tmp_path / "b"])
    add_search_paths([str(tmp_path / "a")])

    assert sys.path == [str(tmp_path / "a"), str(tmp_path / "b"), "/existing"]


# ---------------------------------------------------------------------------------------- models
def test_model_by_import_path_takes_its_declared_defaults(user_dir: Path) -> None:
    cfg = ModelConfig(arch=f"{USER_MODULE}:MeanNet", num_classes=3)

    assert cfg.widths == (5,) and cfg.input_pool == 3
    model = build_model(cfg, seed=0)
    assert type(model).__name__ == "MeanNet" and model(torch.rand(2, 8, 1, 4, 4)).shape == (2, 3)
    again = build_model(cfg, seed=0)
    assert torch.equal(model.fc.weight, again.fc.weight)  # seeded like the built-ins


def test_model_factory_function_and_generic_defaults(user_dir: Path) -> None:
    cfg = ModelConfig(arch=f"{USER_MODULE}:make_net")

    assert cfg.widths == (8, 16, 32) and cfg.input_pool == 1  # the factory declares no defaults
    assert type(build_model(cfg, seed=1)).__name__ == "MeanNet"


def test_model_by_entry_point(user_dir: Path, fake_entry_points) -> None:
    fake_entry_points("fedtwin.models", "meannet", f"{USER_MODULE}:MeanNet")

    assert type(build_model(ModelConfig(arch="meannet"), seed=0)).__name__ == "MeanNet"


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("NotAModule", "which is not a torch.nn.Module subclass or a factory taking the ModelConfig"),
        ("NeedsTwo", "which is not a torch.nn.Module subclass or a factory taking the ModelConfig"),
    ],
)
def test_model_of_the_wrong_shape_fails_at_config_load(user_dir: Path, attr: str, message: str) -> None:
    with pytest.raises(PluginError) as err:
        ModelConfig(arch=f"{USER_MODULE}:{attr}")
    # "arch" here: the config loader prefixes the section, giving "model.arch: ..."
    assert _one_line(err).startswith(f"arch: '{USER_MODULE}:{attr}' resolved to class {USER_MODULE}.{attr}")
    assert message in str(err.value)


def test_factory_returning_no_module_fails_when_built(user_dir: Path) -> None:
    cfg = ModelConfig(arch=f"{USER_MODULE}:make_nothing")

    with pytest.raises(PluginError) as err:
        build_model(cfg, seed=0)
    assert _one_line(err) == f"model.arch: '{USER_MODULE}:make_nothing' built a str, not a torch.nn.Module"


def test_recipes_needing_feature_taps_reject_a_plain_classifier(user_dir: Path) -> None:
    cfg = ModelConfig(arch=f"{USER_MODULE}:MeanNet")

    with pytest.raises(PluginError) as err:
        build_model(cfg, seed=0, needs=FEATURE_API)
    assert _one_line(err).startswith(
        f"model.arch: '{USER_MODULE}:MeanNet' builds MeanNet, which lacks forward_features, classify, head;"
    )
    assert isinstance(build_model(ModelConfig(widths=(4,)), seed=0, needs=FEATURE_API), VideoCNN)


def test_builtin_arch_resolves_to_its_spec() -> None:
    assert resolve_arch("tiny3d") is MODELS["tiny3d"]
    assert isinstance(MODELS["c3d"](ModelConfig(arch="c3d", widths=(2,))), VideoCNN)


# ------------------------------------------------------------------------------------ strategies
def test_strategy_by_name_entry_point_and_import_path(user_dir: Path, fake_entry_points) -> None:
    from fedtwin.orchestrator.recipes.federated.strategies import STRATEGIES, FedAvg, strategy_class

    assert strategy_class("fedavg") is FedAvg and set(STRATEGIES) == {
        "fedavg",
        "fedavgm",
        "feddu",
        "feddum",
        "fedprox",
        "scaffold",
        "fedadam",
        "fedyogi",
        "fedadagrad",
    }
    assert strategy_class(f"{USER_MODULE}:HalfStrategy").name == "half"
    fake_entry_points("fedtwin.strategies", "half", f"{USER_MODULE}:HalfStrategy")
    assert strategy_class("half").name == "half"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("fedsgd", "strategy.name: unknown strategy 'fedsgd'; did you mean 'feddu'? choose one of fedadagrad, fedadam"),
        (
            f"{USER_MODULE}:MeanNet",
            "which is not a subclass of fedtwin.orchestrator.recipes.federated.strategies.base.Strategy",
        ),
        (
            f"{USER_MODULE}:Abstract",
            "strategy.name: Abstract ('fedtwin_test_user_plugins:Abstract') does not implement aggregate_fit",
        ),
        (f"{USER_MODULE}:Unnamed", "must set its own class attribute `name`"),
    ],
)
def test_bad_strategies_are_one_line(user_dir: Path, ref: str, message: str) -> None:
    from fedtwin.orchestrator.recipes.federated.strategies import strategy_class

    with pytest.raises(PluginError) as err:
        strategy_class(ref)
    assert message in _one_line(err)


# ---------------------------------------------------------------------------------- partitioners
def test_partitioner_by_import_path_gets_config_fields_and_params(user_dir: Path) -> None:
    from fedtwin.pipelines.data.partition import PartitionConfig, make_partitioner

    cfg = PartitionConfig(scheme=f"{USER_MODULE}:EvenOdd", min_size=2, params={"offset": 1})
    partitioner = make_partitioner(cfg)

    assert (partitioner.offset, partitioner.min_size) == (1, 2)
    assert partitioner.assign(np.zeros(4), 2, np.random.default_rng(0)).tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": f"{USER_MODULE}:MeanNet"}, "scheme: 'fedtwin_test_user_plugins:MeanNet' resolved to class"),
        (
            {"scheme": f"{USER_MODULE}:EvenOdd", "params": {"ofset": 1}},
            "params: EvenOdd takes no parameter 'ofset' (its own parameters: offset)",
        ),
        (
            {"scheme": f"{USER_MODULE}:EvenOdd", "params": {"min_size": 3}},
            "params: 'min_size' is a partition setting; set it as data.partition.min_size",
        ),
        ({"scheme": "iid", "params": {"offset": 1}}, "params: IIDPartitioner takes no parameter 'offset'"),
    ],
)
def test_bad_partitioner_settings_fail_at_config_load(user_dir: Path, kwargs: dict, message: str) -> None:
    from fedtwin.pipelines.data.partition import PartitionConfig

    with pytest.raises(ValueError) as err:
        PartitionConfig(**kwargs)
    assert message in _one_line(err)
