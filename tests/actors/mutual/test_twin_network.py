"""TwinNetwork in-process (no Ray): pre-training, embeddings, EMA units, state round trip, fusion."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from fedtwin.actors.mutual.twin_network import TwinNetwork
from fedtwin.orchestrator.run.data_prep import ensure_generated
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, ShiftConfig
from fedtwin.pipelines.model.networks import ModelConfig
from fedtwin.pipelines.mutual.pseudo_labels import ClusterSettings, make_pseudo_labels
from fedtwin.pipelines.mutual.settings import (
    AdaptationSettings,
    EmaSettings,
    LossSettings,
    PretrainSettings,
    TwinConfig,
)

MODEL = ModelConfig(widths=(4, 8), frames=4)
CLEAN = MovingDigitsConfig(frames=4, train_per_class=3, test_per_class=2)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin-data")
    source = ensure_generated(root, CLEAN, seed=0)
    target = ensure_generated(root, replace(CLEAN, shift=ShiftConfig()), seed=1)
    return str(source), str(target)


def make_twin(domains, index: int = 0, ema: EmaSettings | None = None) -> TwinNetwork:
    twin = TwinConfig(
        pretrain=PretrainSettings(epochs=1, batch_size=8),
        adaptation=AdaptationSettings(batch_size=8),
        loss=LossSettings(kind="hard"),
        ema=ema or EmaSettings(),
    )
    return TwinNetwork(twin, index, 7, MODEL, 1, *domains, kept=np.arange(30))


def test_twins_differ_and_embeddings_are_unit_rows(domains):
    # Execute
    a, b = make_twin(domains, 0), make_twin(domains, 1)
    fa, fb = a.embed(), b.embed()

    # Assert: same architecture, different init (index), unit-norm float32 rows of the 30 kept clips
    assert fa.shape == fb.shape == (30, 8) and fa.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fa, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(fa, fb)


def test_per_epoch_ema_is_lambda_mix_of_old_mean_and_new_weights(domains):
    # Prepare
    twin = make_twin(domains, ema=EmaSettings(unit="epoch", momentum=0.75))
    twin.pretrain()
    assignment = make_pseudo_labels([twin.embed()], "self", ClusterSettings(num_clusters=3), seed=0).assignments[0]
    before = twin.ema.stages[0][0][0].weight.detach().clone()

    # Execute
    result = twin.train_epoch(assignment, epoch=1)

    # Assert: E = 0.75 E_old + 0.25 θ_new; 30 clips / batch 8 = 4 steps; provenance travels along
    after = twin.model.stages[0][0][0].weight.detach()
    torch.testing.assert_close(twin.ema.stages[0][0][0].weight.detach(), 0.75 * before + 0.25 * after)
    assert result["steps"] == 4 and result["label_source"] == assignment.source
    assert twin.ema_step == 4


def test_per_iteration_ema_counts_global_steps_and_tracks_the_network(domains):
    # Prepare: alpha=0 makes the mean model a copy of the network after every step
    twin = make_twin(domains, ema=EmaSettings(unit="iter", momentum=0.0))
    assignment = make_pseudo_labels([twin.embed()], "self", ClusterSettings(num_clusters=3), seed=0).assignments[0]

    # Execute: two epochs
    twin.train_epoch(assignment, epoch=1)
    twin.train_epoch(assignment, epoch=2)

    # Assert
    assert twin.ema_step == 8
    for mean, net in zip(twin.ema.parameters(), twin.model.parameters(), strict=True):
        torch.testing.assert_close(mean, net)


def test_state_round_trip_restores_the_twin_exactly(domains):
    # Prepare: a trained twin with a 4-cluster head
    twin = make_twin(domains)
    assignment = make_pseudo_labels([twin.embed()], "self", ClusterSettings(num_clusters=4), seed=1).assignments[0]
    twin.train_epoch(assignment, epoch=1)
    fresh = make_twin(domains)

    # Execute
    fresh.set_state(twin.get_state())

    # Assert: same features, same head size, same next epoch
    np.testing.assert_array_equal(fresh.embed(), twin.embed())
    assert fresh.model.head.out_features == 4
    assert fresh.train_epoch(assignment, epoch=2)["loss"] == twin.train_epoch(assignment, epoch=2)["loss"]


def test_fusion_then_finetuning_scores_on_the_target_test_split(domains):
    # Prepare
    a, b = make_twin(domains, 0), make_twin(domains, 1)
    labels = make_pseudo_labels([a.embed(), b.embed()], "shared", ClusterSettings(num_clusters=3), seed=0)

    # Execute
    out = a.fuse_and_finetune(b.ema_state(), (0.5, 0.5), labels.assignments[0], epochs=1)

    # Assert
    assert 0.0 <= out["test_acc"] <= 1.0 and np.isfinite(out["finetune_loss"])
    assert a.ema.head.out_features == 3
