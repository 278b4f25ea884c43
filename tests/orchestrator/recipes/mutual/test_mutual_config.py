"""The ``twin`` config section: defaults, validation messages with dotted paths, the shipped YAML."""

from pathlib import Path

import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.mutual.setup import target_generator

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
    spec = ExperimentSpec.from_dict({"recipe": "mutual", "twin": {"ema": {"momentum": 0.9, "unit": "epoch"}}})

    # Execute
    views = spec.twin.views

    # Assert
    assert (views.name(0), views.name(1)) == ("temporal_crop", "photometric")
    assert views.params(0) == {} and views.params(1) == {"flip_p": 0.0}
    assert spec.twin.ema.momentum == 0.9 and spec.twin.ema.unit == "epoch"
    assert spec.twin.adaptation.train_settings(epochs=1).lr == spec.twin.adaptation.lr == 1e-3


def test_flat_keys_of_the_old_section_load_with_a_warning_naming_the_new_key(caplog):
    # Prepare
    flat = {"lr": 0.01, "batch_size": 8, "loss": "hard", "networks": 1, "clustering": "dbscan", "final": "select"}

    # Execute
    with caplog.at_level("WARNING"):
        spec = ExperimentSpec.from_dict({"recipe": "mutual", "twin": flat})

    # Assert
    tw = spec.twin
    assert tw.adaptation.lr == 0.01 and tw.adaptation.batch_size == tw.pretrain.batch_size == 8
    assert tw.loss.kind == "hard" and tw.clustering.method == "dbscan" and tw.final.mode == "select"
    lines = [r.getMessage() for r in caplog.records]
    assert "twin.lr is deprecated and will be removed; use twin.adaptation.lr" in lines
    assert "twin.loss is deprecated and will be removed; use twin.loss.kind" in lines
    assert all("\n" not in line for line in lines)
    assert ExperimentSpec.from_dict(spec.to_dict()) == spec  # saved with the new keys only


@pytest.mark.parametrize(
    ("twin", "message"),
    [
        ({"ema": {"momentum": 1.5}}, "twin.ema.momentum: must be in [0, 1], got 1.5"),
        ({"ema_momentum": 1.5}, "twin.ema.momentum: must be in [0, 1], got 1.5"),
        ({"label_mode": "both"}, "twin.label_mode: 'both' is not one of 'cross', 'shared'"),
        ({"networks": 1}, "twin.loss.kind: 'mmt' needs a peer; with networks: 1 use loss.kind: hard"),
        ({"views": {"b": "flip"}}, "twin.views.b: must be one of"),
        ({"clustering": {"num_clusters": 1}}, "twin.clustering.num_clusters: must be >= 2 or null"),
        ({"adaptation": {"lr": 0}}, "twin.adaptation.lr: must be > 0"),
        ({"target": {"train_per_class": 0}}, "twin.target.train_per_class: must be >= 1 or null, got 0"),
        ({"pretrain": {"candidates": 2}}, "twin.pretrain.candidates: only for networks: 1"),
        ({"networks": 1, "loss": {"kind": "hard"}, "pretrain": {"candidates": 3}}, "twin.pretrain.candidates"),
        ({"adaptation": {"labels": "true"}}, "twin.adaptation.labels"),
        ({"loss": {"teacher": "mean"}}, "twin.loss.teacher"),
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


#: The ``twin`` section as fedtwin 0.2 wrote it into a run folder's ``spec.yaml`` (every flat key).
STORED_0_2 = {
    "networks": 2,
    "pretrain_epochs": 6,
    "pretrain_lr": 0.003,
    "epochs": 10,
    "lr": 0.001,
    "weight_decay": 0.0005,
    "batch_size": 32,
    "ema_unit": "iter",
    "ema_momentum": 0.999,
    "label_mode": "shared",
    "loss": "mmt",
    "lambda_id": 0.5,
    "lambda_tri": 0.8,
    "label_smoothing": 0.1,
    "use_triplet": True,
    "clustering": "kmeans",
    "num_clusters": 10,
    "k_candidates": [6, 8, 10, 12, 14],
    "dbscan_metric": "jaccard",
    "dbscan_rho": 0.0016,
    "dbscan_min_samples": 4,
    "shared_features": "concat",
    "dropout": 0.0,
    "augment_a": "temporal_crop",
    "augment_a_params": {},
    "augment_b": "photometric",
    "augment_b_params": {"flip_p": 0.0},
    "q_min": 0.0,
    "final": "select",
    "finetune_epochs": 2,
    "target": {"shift": {"blur_sigma": 1.0, "contrast": 0.5, "noise_std": 0.1}, "seed": None},
    "timeout_s": 1800.0,
}


def test_a_stored_spec_of_an_older_run_loads_as_the_grouped_section():
    # Execute: what `fedtwin run --resume` reads from an older run folder
    spec = ExperimentSpec.from_stored({"name": "old", "recipe": "mutual", "twin": STORED_0_2})

    # Assert: the same settings, held by the grouped section (these values are also today's defaults)
    assert spec == ExperimentSpec.from_dict({"name": "old", "recipe": "mutual"})


def test_new_baseline_keys_default_to_the_old_behaviour_and_load():
    """Unset, the study's keys keep the old runs (twin a's network alone, pseudo-labels, the peer as teacher)."""
    old = ExperimentSpec.from_dict({"recipe": "mutual", "twin": {"networks": 1, "loss": {"kind": "hard"}}}).twin
    assert (old.pretrain.candidates, old.adaptation.labels, old.loss.teacher) == (1, "pseudo", "peer")
    assert old.pretrained_networks == 1
    fair = ExperimentSpec.from_dict(
        {
            "recipe": "mutual",
            "twin": {"networks": 1, "pretrain": {"candidates": 2}, "loss": {"kind": "mmt", "teacher": "self"}},
        }
    )
    assert fair.twin.pretrained_networks == 2 and fair.twin.loss.needs_peer
    assert ExperimentSpec.from_dict(fair.to_dict()) == fair
