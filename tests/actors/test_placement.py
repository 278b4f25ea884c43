"""Actor options, the trainer GPU policy, the torch runtime helpers and the shared actor base (no Ray)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedtwin.actors.placement import actor_options, plugin_pythonpath, trainer_gpus
from fedtwin.actors.torch_runtime import torch_device
from fedtwin.actors.trainer_base import TorchActor
from fedtwin.pipelines.model.networks import ModelConfig
from fedtwin.pipelines.model.state import state_from_model

SMALL = ModelConfig(widths=(4, 8), num_classes=3)


def test_actor_options_without_plugins_have_no_runtime_env():
    options = actor_options(num_cpus=1, num_gpus=0.5, max_restarts=0, name="host-0", scheduling_strategy="PG")
    assert options == {
        "num_cpus": 1,
        "num_gpus": 0.5,
        "max_restarts": 0,
        "max_task_retries": 0,
        "name": "host-0",
        "scheduling_strategy": "PG",
    }


def test_plugin_paths_go_first_on_the_workers_pythonpath(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/already/there", ""]))
    options = actor_options(num_cpus=1, plugin_paths=[str(tmp_path / "plugins"), "/abs/other"])
    assert options["runtime_env"] == {
        "env_vars": {"PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), "/abs/other", "/already/there"])}
    }
    monkeypatch.delenv("PYTHONPATH")
    assert plugin_pythonpath(["rel"]) == os.path.abspath("rel")  # relative folders become absolute
    assert plugin_pythonpath(["/a", "/a"], existing="/a") == "/a"


@pytest.mark.parametrize(
    ("requested", "cluster", "in_group", "share", "expected"),
    [
        (0.25, 0.0, True, 1.0, 0.25),  # resources.gpus_per_host wins, wherever the actor runs
        (0.0, 1.0, True, 1.0, 0.0),  # a Tune placement group's bundles decide
        (0.0, 2.0, False, 1.0, 1.0),  # a whole GPU for a single trainer
        (0.0, 1.0, False, 0.5, 0.5),  # two twins share one GPU
        (0.0, 0.0, False, 1.0, 0.0),  # no GPU in the cluster
        (0.0, 0.5, False, 1.0, 0.0),  # only a fraction of one: not enough for the default
    ],
)
def test_trainer_gpus_policy(requested, cluster, in_group, share, expected):
    assert trainer_gpus(requested, cluster, in_group, share) == expected


def test_torch_device_without_gpu_preference_is_cpu():
    assert torch_device(prefer_gpu=False) == "cpu"


class _Actor(TorchActor):
    def __init__(self, seed: int) -> None:
        super().__init__(torch_threads=1)
        self.model = self.new_model(SMALL, seed)


def test_torch_actor_builds_seeded_models_and_moves_weights():
    a, b, c = _Actor(0), _Actor(0), _Actor(1)
    weights = a.get_weights()
    assert a.device in ("cpu", "cuda") and a.ping() == os.getpid()
    assert all(np.array_equal(weights[k], v) for k, v in b.get_weights().items())
    assert not np.array_equal(weights["head.weight"], c.get_weights()["head.weight"])
    c.set_weights(weights)
    assert all(np.array_equal(state_from_model(c.model)[k], v) for k, v in weights.items())


def test_torch_actor_without_a_model_says_so():
    actor = TorchActor(torch_threads=1)
    with pytest.raises(RuntimeError, match="TorchActor has no model yet"):
        actor.get_weights()
