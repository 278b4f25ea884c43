"""The federated baselines' parameters are sweepable by ``fedtwin tune`` under their dotted keys, and a
bad value fails at load time naming the key (no Ray)."""

from __future__ import annotations

import pytest
import yaml

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.tune.sweep_config import load_sweep

BASE = {
    "name": "tiny",
    "data": {"root": "/tmp/unused", "partition": {"devices": 10, "scheme": "iid"}},
    "federation": {"num_rounds": 6, "devices_per_round": 10},
    "resources": {"hosts": 2},
}


@pytest.mark.parametrize(
    ("strategy", "space"),
    [
        ("fedprox", {"strategy.params.mu": {"loguniform": [0.001, 1.0]}}),
        ("scaffold", {"strategy.params.server_lr": {"choice": [0.5, 1.0]}}),
        (
            "fedadam",
            {
                "strategy.params.server_lr": {"loguniform": [0.001, 0.3]},
                "strategy.params.tau": {"choice": [1e-3, 1e-2]},
            },
        ),
        ("fedyogi", {"strategy.params.beta2": {"uniform": [0.9, 0.999]}}),
        ("fedadagrad", {"training.lr": {"loguniform": [0.001, 0.01]}}),
    ],
)
def test_strategy_params_are_sweepable(tmp_path, strategy, space):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "strategy": {"name": strategy}}))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "search_space": space}, sort_keys=False))
    assert load_sweep(path).sweep.keys == list(space)


def test_an_out_of_range_value_names_the_key(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "strategy": {"name": "fedprox"}}))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "search_space": {"strategy.params.mu": {"uniform": [-1, 1]}}}))
    with pytest.raises(ConfigError, match=r"strategy.params.mu: value -1.*must be >= 0"):
        load_sweep(path)
