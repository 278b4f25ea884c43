"""Config validation: unknown keys, bad types and bad ranges name the dotted path; the CLI exits 2."""

import subprocess
import sys
import textwrap

import pytest

from orchestrator.config.spec import ExperimentSpec
from orchestrator.config.loader import ConfigError


def test_defaults_round_trip():
    spec = ExperimentSpec()
    assert ExperimentSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"federation": {"devices_per_rounds": 3}}, r"federation.devices_per_rounds: unknown key \(did you mean 'devices_per_round'\?\)"),
        ({"federation": {"num_rounds": "ten"}}, r"federation.num_rounds: expected an integer, got str 'ten'"),
        ({"federation": {"min_success_fraction": 1.5}}, r"federation.min_success_fraction: must be in \(0, 1\]"),
        ({"training": {"optimizer": "rmsprop"}}, r"training.optimizer: 'rmsprop' is not one of 'sgd', 'adam'"),
        ({"recipe": "nope"}, r"recipe: unknown recipe 'nope'"),
        ({"strategy": {"name": "fedavg", "params": {"server_lr": -1}}}, r"strategy.params.server_lr: must be > 0"),
        ({"resources": {"hosts": 0}}, r"resources.hosts: must be >= 1"),
    ],
)
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentSpec.from_dict(data)


def test_overrides_revalidate():
    spec = ExperimentSpec().with_overrides({"federation.num_rounds": 7, "strategy.params.server_lr": 0.5})
    assert spec.federation.num_rounds == 7 and spec.strategy.params == {"server_lr": 0.5}
    with pytest.raises(ConfigError, match="federation.num_rounds: must be >= 1"):
        spec.with_overrides({"federation.num_rounds": 0})


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("federation:\n  rounds: 3\n", "federation.rounds: unknown key"),
        ("training:\n  lr: fast\n", "training.lr: expected a number"),
        ("training:\n  lr: -0.1\n", "training.lr: must be > 0"),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(tmp_path, yaml_text, expected):
    # Prepare
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(textwrap.dedent(yaml_text))
    # Execute
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", "run", str(cfg)], capture_output=True, text=True, timeout=120
    )
    # Assert
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr


def test_cli_bad_set_option_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", "run", "configs/quickstart.yaml", "--set", "federation.num_rounds=-3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "federation.num_rounds: must be >= 1" in proc.stderr
