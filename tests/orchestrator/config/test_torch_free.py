"""Loading, validating and printing a spec imports neither torch nor Ray (each check in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import sys, yaml
from fedtwin.orchestrator.config.spec import ExperimentSpec
spec = ExperimentSpec.from_yaml(sys.argv[1])
yaml.safe_dump(spec.to_dict(), sort_keys=False)  # what --print-config prints
heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def _heavy_modules_after_loading(config: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "configs" / config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("config", ["mutual.yaml", "incremental.yaml", "transfer.yaml"])
def test_recipe_specs_load_validate_and_print_without_torch_or_ray(config):
    assert _heavy_modules_after_loading(config) == "none"


@pytest.mark.xfail(
    strict=True,
    reason="the federated recipe module (its backend, strategies and build_model imports) pulls in torch "
    "when a federated spec loads; it needs a torch-free declaration like the other built-in recipes",
)
def test_quickstart_loads_validates_and_prints_without_torch_or_ray():
    assert _heavy_modules_after_loading("quickstart.yaml") == "none"
