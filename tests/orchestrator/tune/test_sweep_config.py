"""Sweep files: strict loading with dotted-path errors, distributions, and the CLI's one-line exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.cli.main import main
from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.tune.sweep_config import Dimension, load_sweep, parse_dimension

BASE = {
    "name": "tiny",
    "data": {"root": "/tmp/unused", "partition": {"devices": 10, "scheme": "iid"}},
    "strategy": {"name": "fedavgm"},
    "federation": {"num_rounds": 6, "devices_per_round": 10},
    "resources": {"hosts": 2},
}


def write_sweep(tmp_path: Path, **sweep) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    doc = {"base": "base.yaml", "search_space": {"strategy.params.server_lr": {"loguniform": [0.1, 1.0]}}}
    doc.update(sweep)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_valid_sweep_parses_dimensions_in_file_order(tmp_path):
    # Prepare
    path = write_sweep(
        tmp_path,
        overrides={"federation.num_rounds": 4},
        search_space={
            "strategy.params.server_lr": {"loguniform": [0.1, 1.0]},
            "strategy.params.server_momentum": {"choice": [0.0, 0.5, 0.9]},
            "training.lr": {"uniform": [0.01, 0.1]},
            "seed": {"grid": [0, 1]},
        },
    )
    # Execute
    loaded = load_sweep(path)
    # Assert
    sweep = loaded.sweep
    assert sweep.keys == ["strategy.params.server_lr", "strategy.params.server_momentum", "training.lr", "seed"]
    assert sweep.dimensions[0] == Dimension("strategy.params.server_lr", "loguniform", low=0.1, high=1.0)
    assert sweep.dimensions[1].values == (0.0, 0.5, 0.9)
    assert loaded.base.federation.num_rounds == 4  # fixed overrides applied to the base
    assert sweep.search.samples == 8 and sweep.scheduler.name == "asha" and sweep.objective.name == "accuracy"


def test_grid_search_defaults_to_one_pass():
    # Prepare / Execute
    from fedtwin.orchestrator.tune.sweep_config import SearchConfig

    # Assert
    assert SearchConfig(algorithm="grid").samples == 1
    assert SearchConfig(algorithm="grid", num_samples=3).samples == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"logunif": [0.1, 1]}, "search_space.k: unknown distribution 'logunif'"),
        ({"uniform": [1.0, 0.5]}, r"search_space.k.uniform: needs low < high, got \[1.0, 0.5\]"),
        ({"loguniform": [0.0, 1.0]}, "search_space.k.loguniform: low must be > 0"),
        ({"uniform": [0, 1, 2]}, r"search_space.k.uniform: expected \[low, high\] numbers"),
        ({"choice": []}, "search_space.k.choice: expected a non-empty list"),
        ({"choice": [1, 1]}, r"search_space.k.choice: values repeat in \[1, 1\]"),
        (0.5, r"search_space.k: expected one of .*got 0.5 \(fixed values go under 'overrides'\)"),
    ],
)
def test_bad_distributions_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_dimension("k", raw)


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"schedulr": {"name": "asha"}}, r"schedulr: unknown key \(did you mean 'scheduler'\?\)"),
        ({"search": {"num_samples": "eight"}}, "search.num_samples: expected an integer, got str .eight."),
        ({"scheduler": {"name": "hyperband"}}, "scheduler.name: 'hyperband' is not one of 'asha', 'pbt', 'fifo'"),
        ({"scheduler": {"reduction_factor": 1}}, "scheduler.reduction_factor: must be > 1"),
        ({"resources": {"driver_cpus": 0}}, "resources.driver_cpus: must be > 0"),
        (
            {"search_space": {"strategy.params.server_lr": {"uniform": [0.1, 2.0]}}, "search": {"algorithm": "grid"}},
            "search_space.strategy.params.server_lr: algorithm 'grid' needs grid/choice values",
        ),
        (
            {"search": {"algorithm": "optuna"}, "scheduler": {"name": "pbt"}},
            "scheduler.name: pbt draws its own configs",
        ),
        (
            {"overrides": {"strategy.params.server_lr": 0.5}},
            "search_space.strategy.params.server_lr: also fixed under overrides",
        ),
        ({"search_space": {}}, "search_space: must name at least one dotted key"),
    ],
)
def test_sweep_file_errors_name_the_dotted_path(tmp_path, sweep, message):
    path = write_sweep(tmp_path, **sweep)
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_searched_values_are_checked_against_the_base_experiment(tmp_path):
    # A misspelt strategy parameter and an out-of-range value fail at load time, naming the key.
    typo = write_sweep(tmp_path, search_space={"strategy.params.server_mom": {"choice": [0.5]}})
    with pytest.raises(
        ConfigError, match=r"search_space.strategy.params.server_mom: value 0.5 gives an invalid experiment"
    ):
        load_sweep(typo)
    out_of_range = write_sweep(tmp_path, search_space={"strategy.params.server_momentum": {"uniform": [0.5, 1.5]}})
    with pytest.raises(ConfigError, match=r"server_momentum: value 1.5 .*must be in \[0, 1\)"):
        load_sweep(out_of_range)
    unknown_section = write_sweep(tmp_path, search_space={"federaton.num_rounds": {"choice": [3]}})
    with pytest.raises(
        ConfigError,
        match=r"search_space.federaton.num_rounds: .*federaton: unknown key \(did you mean 'federation'\?\)",
    ):
        load_sweep(unknown_section)
    other_recipe = write_sweep(tmp_path, search_space={"twin.ema_momentum": {"choice": [0.99]}})
    with pytest.raises(
        ConfigError, match=r"search_space.twin.ema_momentum: .*twin: not a section of recipe 'federated'"
    ):
        load_sweep(other_recipe)


def test_any_dotted_key_of_the_spec_can_be_searched(tmp_path):
    # The machinery is generic: the mutual recipe's EMA momentum needs no sweep code of its own.
    path = write_sweep(
        tmp_path,
        search_space={"twin.ema_momentum": {"choice": [0.99, 0.999]}, "model.dropout": {"uniform": [0.0, 0.5]}},
    )
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"recipe": "mutual", "resources": {"hosts": 2}}))
    assert load_sweep(path).sweep.keys == ["twin.ema_momentum", "model.dropout"]


def test_sweep_needs_fixed_hosts_and_a_target_for_rounds_to_target(tmp_path):
    no_hosts = write_sweep(tmp_path, overrides={"resources.hosts": None})
    with pytest.raises(ConfigError, match="resources.hosts: must be set for a sweep"):
        load_sweep(no_hosts)
    no_target = write_sweep(tmp_path, objective={"name": "rounds_to_target"})
    with pytest.raises(ConfigError, match="objective.target: rounds_to_target needs a target accuracy"):
        load_sweep(no_target)
    with_target = write_sweep(
        tmp_path, objective={"name": "rounds_to_target"}, overrides={"federation.target_accuracy": 0.8}
    )
    assert load_sweep(with_target).base.federation.target_accuracy == 0.8


def test_missing_base_file_is_reported_relative_to_the_sweep(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": "nope.yaml", "search_space": {"seed": {"grid": [0]}}}))
    with pytest.raises(ConfigError, match=r"base: experiment file .*nope.yaml not found"):
        load_sweep(path)


def test_cli_reports_a_bad_sweep_in_one_line_with_exit_2(tmp_path, capsys):
    # Prepare
    path = write_sweep(tmp_path, scheduler={"grace_period": 0})
    # Execute
    code = main(["tune", str(path)])
    # Assert
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert err.startswith("fedtwin: error: ") and "scheduler.grace_period: must be >= 1, got 0" in err


PLAIN_MODEL = """
from torch import nn


class PlainNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.head = nn.Linear(1, cfg.num_classes)

    def forward(self, x):
        return self.head(x.mean(dim=(1, 2, 3, 4))[:, None])
"""


def test_model_checks_left_to_preflight_run_when_a_sweep_loads(tmp_path, capsys):
    # Prepare: a mutual base (its model needs feature taps); a plain classifier as the base model or searched
    (tmp_path / "plain_model.py").write_text(PLAIN_MODEL)
    base = {"recipe": "mutual", "resources": {"hosts": 2}, "plugins": {"paths": ["."]}}
    searched = write_sweep(tmp_path, search_space={"model.arch": {"choice": ["tiny3d", "plain_model:PlainNet"]}})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    # Execute / Assert: a searched value
    with pytest.raises(
        ConfigError,
        match=r"search_space.model.arch: value 'plain_model:PlainNet' gives an invalid experiment: model.arch: "
        r"'plain_model:PlainNet' \(PlainNet\) lacks forward_features, classify",
    ):
        load_sweep(searched)
    # Execute / Assert: the base itself, through the CLI (one line, exit 2, nothing trained)
    fixed = write_sweep(tmp_path, search_space={"model.dropout": {"uniform": [0.0, 0.5]}})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**base, "model": {"arch": "plain_model:PlainNet"}}))
    code = main(["tune", str(fixed), "--output", str(tmp_path / "sweeps")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith(f"fedtwin: error: {fixed}: model.arch: 'plain_model:PlainNet' (PlainNet) lacks")
    assert not (tmp_path / "sweeps").exists()
