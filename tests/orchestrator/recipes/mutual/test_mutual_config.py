"""The ``twin`` config section: defaults, validation messages with dotted paths, the shipped YAML."""

from pathlib import Path

import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.mutual.setup import target_generator, twin_settings

ROOT = Path(__file__).resolve().parents[4]


def test_shipped_config_loads_and_targets_a_shifted_domain_with_other_clips():
    # Execute
    spec = ExperimentSpec.from_yaml(ROOT / "configs" / "mutual.yaml")
    target, seed = target_generator(spec)

    # Assert
    assert spec.recipe == "mutual" and spec.twin.label_mode == "shared"
    assert spec.data.generator.shift is None and target.shift is not None
    assert seed == spec.data.seed + 1 and target.train_per_class == spec.data.generator.train_per_class


def test_twins_get_their_own_views_and_the_shared_training_settings():
    # Prepare
    spec = ExperimentSpec.from_dict({"recipe": "mutual", "twin": {"ema_momentum": 0.9, "ema_unit": "epoch"}})

    # Execute
    a, b = twin_settings(spec, 0), twin_settings(spec, 1)

    # Assert
    assert (a.index, b.index) == (0, 1) and a.seed == b.seed == spec.seed
    assert a.augment == "temporal_crop" and b.augment == "photometric" and b.augment_params == {"flip_p": 0.0}
    assert a.ema_momentum == b.ema_momentum == 0.9 and a.ema_unit == "epoch"


@pytest.mark.parametrize(
    ("twin", "message"),
    [
        ({"ema_momentum": 1.5}, "twin.ema_momentum: must be in [0, 1], got 1.5"),
        ({"label_mode": "both"}, "twin.label_mode: 'both' is not one of 'cross', 'shared'"),
        ({"networks": 1}, "twin.loss: 'mmt' needs a peer; with networks: 1 use loss: hard"),
        ({"augment_b": "flip"}, "twin.augment_b: must be one of"),
        ({"num_clusters": 1}, "twin.num_clusters: must be >= 2 or null"),
        ({"target": {"train_per_class": 0}}, "twin.target.train_per_class: must be >= 1 or null, got 0"),
    ],
)
def test_bad_twin_settings_name_the_field(twin, message):
    with pytest.raises(ConfigError) as err:
        ExperimentSpec.from_dict({"recipe": "mutual", "twin": twin})
    assert message in str(err.value)


def test_a_shifted_source_is_rejected_with_the_fix(tmp_path):
    from fedtwin.orchestrator.recipes.mutual.setup import prepare_domains

    spec = ExperimentSpec.from_dict({"recipe": "mutual", "data": {"root": str(tmp_path), "generator": {"shift": {}}}})
    with pytest.raises(ValueError, match="put the shift under twin.target.shift"):
        prepare_domains(spec)
