"""Tests for fedtwin.actors.transfer.trainer, in-process (no Ray): sessions, fine-tune equivalence, exact resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedtwin.actors.transfer.trainer import TransferTrainer, digit_label_map
from fedtwin.orchestrator.run.checkpoint import load_checkpoint, save_checkpoint
from fedtwin.pipelines.core.seeding import torch_generator
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, ShiftConfig, make_moving_digits_dataset
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.state import load_state, state_from_model
from fedtwin.pipelines.model.training import local_train, predict
from fedtwin.pipelines.transfer.settings import (
    BankConfig,
    MixingConfig,
    PretrainConfig,
    SessionTrainingConfig,
    StreamConfig,
    TransferConfig,
    VerificationConfig,
)
from fedtwin.pipelines.transfer.verification import verify_probabilities

SOURCE = MovingDigitsConfig(train_per_class=20, test_per_class=5)
TARGET = dataclasses.replace(SOURCE, shift=ShiftConfig(), train_per_class=6)  # 60 clips: 2 sessions of 30


@pytest.fixture(scope="module")
def dataset_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer-data")
    make_moving_digits_dataset(root / "source", SOURCE, seed=0)
    make_moving_digits_dataset(root / "target", TARGET, seed=1)
    return str(root / "source"), str(root / "target")


MODEL = ModelConfig(widths=(4, 8), num_classes=10)


def _settings(**changes) -> TransferConfig:
    base = TransferConfig(
        pretrain=PretrainConfig(epochs=1, batch_size=32, optimizer="adam", lr=3e-3),
        stream=StreamConfig(clips_per_session=30),
        # the tiny meta-model is unsure of everything; count every prediction as made
        verification=VerificationConfig(conf_threshold=0.0),
        bank=BankConfig(size=40, policy="gss", source_clips=100),
        training=SessionTrainingConfig(epochs=2, batch_size=8, optimizer="adam", lr=1e-3),
    )
    return dataclasses.replace(base, **changes)


def _trainer(dirs: tuple[str, str], settings: TransferConfig, model: ModelConfig = MODEL) -> TransferTrainer:
    return TransferTrainer(*dirs, settings, model, 0, 1)


def test_digit_label_map_moves_background_digits_to_one_last_class():
    np.testing.assert_array_equal(digit_label_map(None), np.arange(10))
    np.testing.assert_array_equal(digit_label_map((0, 5)), [8, 0, 1, 2, 3, 8, 4, 5, 6, 7])


def test_session_verifies_trains_and_updates_the_bank(dataset_dirs):
    # Prepare
    trainer = _trainer(dataset_dirs, _settings())
    meta = trainer.pretrain()

    # Execute
    record, trace = trainer.run_session(1)

    # Assert: session 0 filled the bank within its quota (4 per class) from the 100 offered source clips
    assert meta["session"] == 0 and meta["bank_size"] == 40 and meta["bank_per_class"] == [4] * 10
    assert meta["bank_new_scene_items"] == 0
    # every clip shows a digit and every prediction counts: each one is correct or wrong, all kept
    assert record["verified_correct"] + record["verified_wrong"] == 30 and record["transfer_samples"] == 30
    assert record["verified_missed"] == record["verified_false_positive"] == 0
    # 30 clips in batches of 8 -> 4 steps per epoch, 2 epochs; one trace row per step
    assert record["train_steps"] == 8 and [row["step"] for row in trace] == list(range(1, 9))
    assert all(-1.0 <= row["s"] <= 1.0 and 0.1 <= row["w_h"] <= 0.9 for row in trace)
    assert record["similarity_steps"] == 8 and sum(record["similarity_histogram"]) == 8
    # the bank stays full, within quota, and now holds the new-scene clips it admitted
    assert record["bank_size"] == 40 and max(record["bank_per_class"]) == 4
    # (a new-scene clip may also evict one admitted earlier in the same call, hence <=)
    assert 0 < record["bank_new_scene_items"] <= record["bank_replaced"]
    assert record["harmonic_mean"] == pytest.approx(
        2
        * record["new_scene_accuracy"]
        * record["source_accuracy"]
        / (record["new_scene_accuracy"] + record["source_accuracy"])
    )
    assert record["forgetting"] == pytest.approx(meta["source_accuracy"] - record["source_accuracy"])


def test_finetune_session_equals_plain_training_on_the_verified_samples(dataset_dirs):
    # Prepare: the fine-tune setting ignores the history gradient, so the session must match a plain
    # cross-entropy local_train on the same verified samples with the same generator
    settings = _settings(mixing=MixingConfig(mode="finetune"), bank=BankConfig(size=40, source_clips=100, update=False))
    trainer = _trainer(dataset_dirs, settings)
    trainer.pretrain()
    reference = build_model(MODEL, seed=0)
    load_state(reference, state_from_model(trainer.model))
    clips = trainer.stream.subset(slice(0, 30))
    verdict = verify_probabilities(predict(reference, clips, output="probs"), clips.labels, conf_threshold=0.0)
    local_train(
        reference,
        (clips.clips[verdict.keep], verdict.labels[verdict.keep]),
        settings.training.train_settings(),
        generator=torch_generator(0, 1, 0),
        optimizer_state=trainer.optimizer_state,
    )

    # Execute
    trainer.run_session(1)

    # Assert
    for key, value in state_from_model(reference).items():
        np.testing.assert_allclose(state_from_model(trainer.model)[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


def test_checkpointed_snapshot_resumes_exactly(dataset_dirs, tmp_path):
    # Prepare: one trainer runs sessions 1 and 2; another restores the checkpoint written after session 1
    settings = _settings()
    straight = _trainer(dataset_dirs, settings)
    straight.pretrain()
    straight.run_session(1)
    snap = straight.snapshot()
    model = snap.pop("model")
    ckpt = load_checkpoint(save_checkpoint(tmp_path, 1, model, snap, {}))
    resumed = _trainer(dataset_dirs, settings)

    # Execute
    resumed.restore({"model": ckpt.model, **ckpt.extra})
    record_a, trace_a = straight.run_session(2)
    record_b, trace_b = resumed.run_session(2)

    # Assert
    assert trace_a == trace_b
    for key in ("new_scene_accuracy", "source_accuracy", "forgetting", "bank_per_class", "bank_new_scene_items"):
        assert record_a[key] == record_b[key]
    for key, value in state_from_model(straight.model).items():
        np.testing.assert_array_equal(state_from_model(resumed.model)[key], value, err_msg=key)


def test_background_digits_form_the_other_class_and_become_hard_negatives(dataset_dirs):
    # Prepare: digits 8 and 9 are "other objects"; 9 classes
    settings = _settings(
        bank=BankConfig(size=36, policy="reservoir", source_clips=100),
        verification=VerificationConfig(
            conf_threshold=0.0, background=True, background_digits=(8, 9), keep_true_negatives=True
        ),
    )
    trainer = _trainer(dataset_dirs, settings)  # model.num_classes 10: the head follows the 9-class label space
    trainer.pretrain()
    clips = trainer.stream.subset(slice(0, 30))
    n_other = int(np.sum(clips.labels == 8))

    # Execute
    record, _ = trainer.run_session(1)

    # Assert: other-object clips are false positives or true negatives, both kept as class 8 here
    assert record["verified_false_positive"] + record["verified_true_negative"] == n_other > 0
    assert record["transfer_samples"] == 30
    assert len(record["bank_per_class"]) == 9 and record["bank_size"] <= 36
    assert trainer.model.head.out_features == 9


def test_sessions_past_the_stream_are_refused(dataset_dirs):
    trainer = _trainer(dataset_dirs, _settings())
    with pytest.raises(ValueError, match="outside 1..2"):
        trainer.run_session(3)
