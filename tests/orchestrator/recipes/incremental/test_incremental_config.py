"""The ``incremental:`` spec section: method presets, validation with dotted paths, the shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.pipelines.incremental.settings import IncrementalConfig, IncrementalLossSettings, MemorySettings

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
    assert objective.layers == (-1,) and spec.incremental.memory.keyframe_view


def test_method_presets_set_the_loss_and_the_memory():
    # Execute / Assert
    loss = IncrementalLossSettings
    assert IncrementalConfig(method="ours_no_temporal", loss=loss(alpha=2.0)).objective().alpha == 0.0
    kd = IncrementalConfig(method="replay_kd", loss=loss(kd_weight=3.0, distill_weight=5.0))
    assert (kd.objective().distillation, kd.objective().weight, kd.resolved_memory_mode) == ("logits", 3.0, "full")
    full = MemorySettings(mode="full")
    assert IncrementalConfig(method="finetune", memory=full).resolved_memory_mode == "none"
    assert IncrementalConfig(method="replay").objective().distillation == "none"
    assert IncrementalConfig(method="ours", memory=full).resolved_memory_mode == "full"
    assert IncrementalConfig().resolved_memory_mode == "keyframes"  # memory.mode auto: the method's memory


def test_flat_keys_of_the_old_section_load_with_a_warning_naming_the_new_key(caplog):
    # Execute
    with caplog.at_level("WARNING"):
        spec = ExperimentSpec.from_dict(
            {"recipe": "incremental", "incremental": {"alpha": 0.5, "memory_budget_bytes": 100, "keyframe_rho": 2.0}}
        )

    # Assert
    inc = spec.incremental
    assert inc.loss.alpha == 0.5 and inc.memory.budget_bytes == 100 and inc.memory.keyframe_rho == 2.0
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "incremental.memory_budget_bytes is deprecated and will be removed; use incremental.memory.budget_bytes"
        in lines
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"incremental.loss.alpha": -1.0}, "incremental.loss.alpha: must be >= 0, got -1.0"),
        ({"incremental.alpha": -1.0}, "incremental.loss.alpha: must be >= 0, got -1.0"),
        ({"incremental.method": "icarl"}, "incremental.method: 'icarl' is not one of"),
        (
            {"incremental.loss.trajectory": "kalman"},
            "incremental.loss.trajectory: must be one of identity, pixel_centroid",
        ),
        ({"incremental.memory.keyframe_rho": 0}, "incremental.memory.keyframe_rho: must be > 0"),
        (
            {"incremental.memory.budget_byte": 1},
            "incremental.memory.budget_byte: unknown key (did you mean 'budget_bytes'?)",
        ),
    ],
)
def test_errors_name_the_dotted_field(override, message):
    with pytest.raises(ConfigError) as err:
        ExperimentSpec.from_dict({"recipe": "incremental"}).with_overrides(override)
    assert message in str(err.value)


def test_trainer_settings_and_gpu_request_follow_the_spec():
    from fedtwin.actors.placement import trainer_gpus

    # Prepare
    spec = ExperimentSpec.from_yaml(
        ROOT / "configs" / "incremental.yaml", {"incremental.method": "replay_kd", "training.lr_decay": 0.5}
    )

    # Execute: what the trainer derives from the two sections it receives
    inc, first, second = spec.incremental, spec.training.settings(1, 6), spec.training.settings(2, 4)

    # Assert: the actor gets the sections; a GPU is taken whenever the cluster has one
    assert inc.resolved_memory_mode == "full" and inc.objective().distillation == "logits"
    assert (inc.epochs_of(0), inc.epochs_of(1)) == (6, 4)
    assert (first.epochs, first.lr, second.lr, second.optimizer) == (6, 0.003, 0.0015, "adam")
    # One GPU policy for every trainer: asked-for share, else a whole GPU when the cluster has one,
    # but nothing inside a Tune placement group (its bundles decide).
    assert trainer_gpus(spec.resources.gpus_per_host, 0.0, False) == 0.0
    assert trainer_gpus(spec.resources.gpus_per_host, 1.0, False) == 1.0
    assert trainer_gpus(spec.resources.gpus_per_host, 1.0, True) == 0.0
    assert trainer_gpus(spec.with_overrides({"resources.gpus_per_host": 0.5}).resources.gpus_per_host, 4.0, True) == 0.5
