"""The new baselines end to end on the in-process backend (the same hosts, folding and loop as on Ray,
without actors): FedProx with mu = 0 gives FedAvg's weights bit for bit, and FedAdam's moments (and
SCAFFOLD's control variates) survive a crash and ``--resume`` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.orchestrator.run.checkpoint import latest_checkpoint
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder
from tests.orchestrator.recipes.federated.test_federated_ray import _CrashAfter, tiny_spec

LOCAL = {"resources.backend": "local", "training.epochs": 1, "federation.devices_per_round": 6}


def _final(spec):
    return latest_checkpoint(run_experiment(spec).run_dir / "checkpoints")


def _assert_equal(a, b):
    assert a.round_num == b.round_num
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], b.model[key])


def test_fedprox_with_mu_0_is_fedavg_bit_for_bit(tiny_data_root, tmp_path):
    # Execute
    fedavg = _final(tiny_spec(tiny_data_root, tmp_path / "a", **LOCAL, **{"federation.num_rounds": 2}))
    prox0 = _final(
        tiny_spec(
            tiny_data_root,
            tmp_path / "b",
            **LOCAL,
            **{"federation.num_rounds": 2, "strategy": {"name": "fedprox", "params": {"mu": 0.0}}},
        )
    )
    prox = _final(
        tiny_spec(tiny_data_root, tmp_path / "c", **LOCAL, **{"federation.num_rounds": 2, "strategy.name": "fedprox"})
    )
    # Assert: mu = 0 is FedAvg exactly; the default mu changes the weights
    _assert_equal(fedavg, prox0)
    assert any(not np.array_equal(fedavg.model[k], prox.model[k]) for k in fedavg.model)


@pytest.mark.parametrize("strategy", ["fedadam", "scaffold"])
def test_strategy_state_survives_crash_and_resume_bit_for_bit(tiny_data_root, tmp_path, strategy):
    # Prepare: checkpoints after rounds 2 and 4; the crash comes after round 3
    overrides = {**LOCAL, "strategy.name": strategy, "federation.num_rounds": 4, "run.checkpoint_every": 2}
    full = _final(tiny_spec(tiny_data_root, tmp_path / "full", **overrides))
    spec = tiny_spec(tiny_data_root, tmp_path / "crash", **overrides)
    folder = RunFolder.create(spec.run.output_dir, spec.name)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, run_dir=folder.path, callbacks=[_CrashAfter(3)])
    # Execute
    resumed = latest_checkpoint(run_experiment(spec, run_dir=folder.path, resume=True).run_dir / "checkpoints")
    # Assert: the weights and every array of the strategy state are identical
    _assert_equal(full, resumed)
    state = full.extra["strategy"]
    assert state and set(state) == set(resumed.extra["strategy"])
    for key, value in state.items():
        np.testing.assert_array_equal(value, resumed.extra["strategy"][key])
