"""Fault drills live outside the experiment spec: plans, their checks, the hook, and old specs."""

from __future__ import annotations

import logging

import pytest

from fedtwin.actors.federated.fault_hook import FaultPoint, no_faults
from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated import backend_common
from fedtwin.orchestrator.recipes.federated.drill import DrillPlan, Kill, check_plan, installed
from tests.orchestrator.recipes.federated.test_federated_ray import tiny_spec

OLD_CHAOS = {"fail_devices": [3], "hang_devices": [], "hang_s": 3600.0, "rounds": [], "kills": [{"round": 1}]}


def test_a_config_with_the_old_chaos_section_is_refused_in_one_line(tmp_path):
    data = tiny_spec(tmp_path, tmp_path).to_dict()
    data["federation"]["chaos"] = OLD_CHAOS
    with pytest.raises(ConfigError, match=r"^federation.chaos: no longer a setting; .*fedtwin drill PLAN CONFIG"):
        ExperimentSpec.from_dict(data)


def test_a_stored_spec_with_the_old_chaos_section_still_loads_with_a_warning(tmp_path, caplog):
    data = tiny_spec(tmp_path, tmp_path).to_dict()
    data["federation"]["chaos"] = OLD_CHAOS
    with caplog.at_level(logging.WARNING):
        spec = ExperimentSpec.from_stored(data)
    assert spec.federation.num_rounds == 3
    assert "federation.chaos: ignored in this stored spec" in caplog.text
    assert "chaos" not in spec.to_dict()["federation"]


def test_plans_are_checked_against_the_run(tmp_path):
    spec = tiny_spec(tmp_path, tmp_path)  # 3 rounds, 2 hosts, checkpoints every round
    check_plan(DrillPlan(kills=(Kill(round=3, host=1), Kill(round=2, target="server", phase="evaluate"))), spec)
    with pytest.raises(ConfigError, match="round 4 is after the last round"):
        check_plan(DrillPlan(kills=(Kill(round=4),)), spec)
    with pytest.raises(ConfigError, match="host 2 does not exist"):
        check_plan(DrillPlan(kills=(Kill(round=1, host=2),)), spec)
    with pytest.raises(ConfigError, match="needs resources.backend: ray"):
        check_plan(DrillPlan(kills=(Kill(round=1),)), spec.with_overrides({"resources.backend": "local"}))
    with pytest.raises(ConfigError, match=r"drill: kills\[0\]\.phase: .evaluate. is not a host phase"):
        DrillPlan.from_mapping({"kills": [{"round": 1, "phase": "evaluate"}]})


def test_the_hook_is_installed_only_inside_the_block_and_fails_the_named_devices(tmp_path):
    assert backend_common.fault_hook() is no_faults
    plan = DrillPlan(fail_devices=(3,), rounds=(2,))
    with installed(plan) as hook:
        assert backend_common.fault_hook() is hook
        assert backend_common.host_settings(tiny_spec(tmp_path, tmp_path)).fault_hook is hook
        hook(FaultPoint("device", 1, host=1, device=3), None)  # not a drill round: nothing happens
        with pytest.raises(RuntimeError, match="injected failure"):
            hook(FaultPoint("device", 2, host=1, device=3), None)
        assert hook._claim(0) and not hook._claim(0)  # a kill fires once
    assert backend_common.fault_hook() is no_faults
    assert backend_common.host_settings(tiny_spec(tmp_path, tmp_path)).fault_hook is None
