"""Loading, validating and printing a spec imports neither torch nor Ray (each check in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import sys, yaml
from fedtwin.orchestrator.config.spec import ExperimentSpec
spec = ExperimentSpec.from_yaml(sys.argv[1])
yaml.safe_dump(spec.to_dict(), sort_keys=False)  # what --print-config prints
heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
print(",".join(heavy) or "none")
"""


CLI_PROBE = """
import sys
from fedtwin.orchestrator.cli.main import main
code = main(["run", sys.argv[1], "--print-config"])
heavy = sorted(m for m in ("torch", "ray", "scipy", "pyarrow") if m in sys.modules)
print(code, ",".join(heavy) or "none")
"""

#: Every experiment file in configs/. The other YAML files there are not experiment specs:
#: cluster_onprem.yaml is a Ray cluster-launcher file and sweep_feddu.yaml a sweep of feddu_short.yaml.
NOT_SPECS = {"cluster_onprem.yaml", "sweep_feddu.yaml"}
SPECS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if p.name not in NOT_SPECS)


def _last_line(probe: str, config: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT / "configs" / config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.strip().splitlines()[-1]


def test_every_recipe_has_a_shipped_config():
    recipes = {yaml.safe_load((ROOT / "configs" / name).read_text()).get("recipe", "federated") for name in SPECS}
    assert {"quickstart.yaml", "mutual.yaml", "incremental.yaml", "transfer.yaml"} <= set(SPECS)
    assert recipes == {"federated", "mutual", "incremental", "transfer"}


@pytest.mark.parametrize("config", SPECS)
def test_shipped_specs_load_validate_and_print_without_torch_or_ray(config):
    assert _last_line(PROBE, config) == "none"


@pytest.mark.parametrize("config", ["quickstart.yaml", "mutual.yaml"])
def test_print_config_imports_no_torch_ray_scipy_or_pyarrow(config):
    assert _last_line(CLI_PROBE, config) == "0 none"


def test_a_bad_strategy_param_is_still_a_load_error_without_torch(tmp_path):
    # Prepare: the federated checks across sections run at load, from the torch-free declaration
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {ROOT / 'configs' / 'quickstart.yaml'}\nstrategy: {{params: {{decay: 2.0}}}}\n")
    probe = PROBE.replace(
        "spec = ExperimentSpec.from_yaml(sys.argv[1])",
        "from fedtwin.orchestrator.config.loader import ConfigError\n"
        "try:\n    ExperimentSpec.from_yaml(sys.argv[1])\nexcept ConfigError as err:\n    print(err)\n"
        "spec = ExperimentSpec()",
    )
    # Execute
    out = subprocess.run(
        [sys.executable, "-c", probe, str(bad)], capture_output=True, text=True, timeout=120, check=True, cwd=ROOT
    )
    # Assert
    error, heavy = out.stdout.strip().splitlines()
    assert error.startswith(f"{bad}: strategy.params.decay:")
    assert heavy == "none"
