"""The ``incremental:`` spec section: method presets, validation with dotted paths, the shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.incremental.config import IncrementalConfig

ROOT = Path(__file__).resolve().parents[4]


def test_shipped_config_loads_as_the_ours_method_on_motion_classes():
    # Execute
    spec = ExperimentSpec.from_yaml(ROOT / "configs" / "incremental.yaml")

    # Assert
    assert spec.recipe == "incremental" and spec.incremental.method == "ours"
    assert spec.data.generator.label_scheme == "digit_motion" and spec.data.generator.num_classes == 10
    assert spec.incremental.resolved_memory_mode == "keyframes"
    objective = spec.incremental.objective()
    assert objective.distillation == "features" and objective.alpha == 1.0 and objective.weight == 0.3
    assert objective.layers == (-1,) and spec.incremental.keyframe_view


def test_method_presets_set_the_loss_and_the_memory():
    # Execute / Assert
    assert IncrementalConfig(method="ours_no_temporal", alpha=2.0).objective().alpha == 0.0
    kd = IncrementalConfig(method="replay_kd", kd_weight=3.0, distill_weight=5.0)
    assert (kd.objective().distillation, kd.objective().weight, kd.resolved_memory_mode) == ("logits", 3.0, "full")
    assert IncrementalConfig(method="finetune", memory_mode="full").resolved_memory_mode == "none"
    assert IncrementalConfig(method="replay").objective().distillation == "none"
    assert IncrementalConfig(method="ours", memory_mode="full").resolved_memory_mode == "full"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"incremental.alpha": -1.0}, "incremental.alpha: must be >= 0, got -1.0"),
        ({"incremental.method": "icarl"}, "incremental.method: 'icarl' is not one of"),
        ({"incremental.trajectory": "kalman"}, "incremental.trajectory: must be one of identity, pixel_centroid"),
        ({"incremental.keyframe_rho": 0}, "incremental.keyframe_rho: must be > 0"),
        (
            {"incremental.memory_budgets": 1},
            "incremental.memory_budgets: unknown key (did you mean 'memory_budget_bytes'?)",
        ),
    ],
)
def test_errors_name_the_dotted_field(override, message):
    with pytest.raises(ConfigError) as err:
        ExperimentSpec.from_dict({"recipe": "incremental"}).with_overrides(override)
    assert message in str(err.value)


def test_trainer_settings_and_gpu_request_follow_the_spec():
    from fedtwin.actors.placement import trainer_gpus
    from fedtwin.orchestrator.recipes.incremental.recipe import trainer_settings

    # Prepare
    spec = ExperimentSpec.from_yaml(ROOT / "configs" / "incremental.yaml", {"incremental.method": "replay_kd"})

    # Execute
    settings = trainer_settings(spec)

    # Assert: the actor gets plain settings; a GPU is taken whenever the cluster has one
    assert settings.memory_mode == "full" and settings.objective.distillation == "logits"
    assert (settings.epochs, settings.first_task_epochs, settings.lr) == (4, 6, 0.003)
    # One GPU policy for every trainer: asked-for share, else a whole GPU when the cluster has one,
    # but nothing inside a Tune placement group (its bundles decide).
    assert trainer_gpus(spec.resources.gpus_per_host, 0.0, False) == 0.0
    assert trainer_gpus(spec.resources.gpus_per_host, 1.0, False) == 1.0
    assert trainer_gpus(spec.resources.gpus_per_host, 1.0, True) == 0.0
    assert trainer_gpus(spec.with_overrides({"resources.gpus_per_host": 0.5}).resources.gpus_per_host, 4.0, True) == 0.5
