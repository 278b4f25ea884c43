"""Config validation on the built-in recipes: unknown keys, bad types, bad ranges and other recipes'
sections name the dotted path; the CLI exits 2 with one line."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.cli.main import main
from fedtwin.orchestrator.config import ConfigError, ExperimentSpec

ROOT = Path(__file__).resolve().parents[3]


def fedtwin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_defaults_round_trip():
    spec = ExperimentSpec()
    assert ExperimentSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"federation": {"devices_per_rounds": 3}},
            r"federation.devices_per_rounds: unknown key \(did you mean 'devices_per_round'\?\)",
        ),
        ({"federation": {"num_rounds": "ten"}}, r"federation.num_rounds: expected an integer, got str 'ten'"),
        ({"federation": {"min_success_fraction": 1.5}}, r"federation.min_success_fraction: must be in \(0, 1\]"),
        ({"training": {"optimizer": "rmsprop"}}, r"training.optimizer: 'rmsprop' is not one of 'sgd', 'adam'"),
        ({"recipe": "nope"}, r"recipe: unknown name 'nope'"),
        ({"strategy": {"name": "fedavg", "params": {"server_lr": -1}}}, r"strategy.params.server_lr: must be > 0"),
        ({"resources": {"hosts": 0}}, r"resources.hosts: must be >= 1"),
        ({"twin": {"epochs": 2}}, r"twin: not a section of recipe 'federated' \(it belongs to recipe 'mutual'\)"),
        (
            {"recipe": "mutual", "federation": {}},
            r"federation: not a section of recipe 'mutual' \(it belongs to recipe 'federated'\)",
        ),
        ({"recipe": "transfer", "incremental": {}}, r"incremental: not a section of recipe 'transfer'"),
    ],
)
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentSpec.from_dict(data)


@pytest.mark.parametrize(
    ("recipe", "sections"),
    [
        ("federated", ["training", "federation", "strategy", "system"]),
        ("mutual", ["twin"]),
        ("incremental", ["training", "incremental"]),
        ("transfer", ["transfer"]),
    ],
)
def test_each_recipe_spec_holds_only_its_sections(recipe, sections):
    # Execute
    data = ExperimentSpec.from_dict({"recipe": recipe}).to_dict()
    # Assert
    common = ["name", "recipe", "seed", "data", "model", "resources", "ray", "run", "plugins"]
    assert sorted(data) == sorted(common + sections)


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
        (
            "twin:\n  epochs: 3\n",
            "twin: not a section of recipe 'federated' (it belongs to recipe 'mutual'); "
            "remove it or set recipe: mutual",
        ),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(tmp_path, capsys, yaml_text, expected):
    # Prepare
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(textwrap.dedent(yaml_text))
    # Execute: the CLI's main in this process (the subprocess's exit 2 is checked by the next test)
    code = main(["run", str(cfg)])
    # Assert
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err


def test_cli_bad_set_option_exits_2():
    proc = fedtwin("run", "configs/quickstart.yaml", "--set", "federation.num_rounds=-3")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "federation.num_rounds: must be >= 1" in proc.stderr


@pytest.mark.parametrize("name", ["quickstart", "fedavg", "feddum", "feddu_short", "mutual", "incremental", "transfer"])
def test_shipped_configs_load_with_only_their_recipe_sections(name):
    # Execute
    spec = ExperimentSpec.from_yaml(ROOT / "configs" / f"{name}.yaml")
    # Assert
    raw = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    own = set(spec.sections)
    assert set(raw) - {"base"} <= own | {
        "name",
        "recipe",
        "seed",
        "data",
        "model",
        "resources",
        "ray",
        "run",
        "plugins",
    }
    assert ExperimentSpec.from_dict(spec.to_dict()) == spec


def test_quickstart_is_fedavg_plus_the_feddu_server_update():
    # Execute
    fedavg = ExperimentSpec.from_yaml(ROOT / "configs" / "fedavg.yaml")
    quick = ExperimentSpec.from_yaml(ROOT / "configs" / "quickstart.yaml")
    # Assert
    assert quick.strategy.name == "feddu" and quick.strategy.params == {"decay": 0.99, "C": 1.0}
    assert quick.replace(name="fedavg", strategy={"name": "fedavg"}) == fedavg
