"""The incremental trainer in-process (no Ray): head growth, memory within budget, accuracy rows, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtwin.actors.incremental.trainer import IncrementalTrainer
from fedtwin.orchestrator.run.data_prep import ensure_generated
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig
from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector
from fedtwin.pipelines.incremental.settings import IncrementalConfig, MemorySettings
from fedtwin.pipelines.incremental.task_split import make_task_split
from fedtwin.pipelines.model.networks import ModelConfig
from fedtwin.pipelines.model.train_config import TrainConfig

CLIP_BYTES = 8 * 32 * 32
SPLIT = make_task_split(10, 2, classes_per_task=2, seed=0)  # two tasks of two classes (4 of the 10 used)


@pytest.fixture(scope="module")
def motion_dataset(tmp_path_factory) -> str:
    cfg = MovingDigitsConfig(label_scheme="digit_motion", train_per_class=12, test_per_class=4)
    return str(ensure_generated(tmp_path_factory.mktemp("incdata"), cfg, seed=0))


def _trainer(dataset: str, memory_dir: Path, method: str = "ours", budget: int = 6 * CLIP_BYTES) -> IncrementalTrainer:
    """A trainer of ``method`` (ours: key-frame memory; replay_kd: full clips; finetune: none)."""
    inc = IncrementalConfig(epochs_per_task=2, method=method, memory=MemorySettings(budget_bytes=budget))
    training = TrainConfig(batch_size=8, lr=3e-3, optimizer="adam")
    return IncrementalTrainer(dataset, SPLIT, str(memory_dir), inc, training, ModelConfig(), 0, 1)


def test_two_tasks_grow_the_head_fill_the_matrix_and_keep_memory_in_budget(motion_dataset, tmp_path):
    # Prepare
    trainer = _trainer(motion_dataset, tmp_path / "memory")

    # Execute
    first = trainer.fit_task(0)
    second = trainer.fit_task(1)

    # Assert: head rows = seen classes; row 1 measured on task 1 only; 2 classes x 4 test clips per task
    assert first.state["head.weight"].shape == (2, 32) and second.state["head.weight"].shape == (4, 32)
    assert np.isfinite(first.accuracy_row[0]) and np.isnan(first.accuracy_row[1])
    assert np.isfinite(second.accuracy_row).all() and (0 <= second.accuracy_row).all()
    assert first.test_counts.tolist() == [8, 0] and second.test_counts.tolist() == [8, 8]
    assert second.metrics["replayed_clips"] == first.metrics["memory_clips"] > 0
    assert second.metrics["train_clips"] == 2 * 12 + first.metrics["memory_clips"]
    assert "train_l_sf" in second.metrics and "train_l_sf" not in first.metrics
    for outcome in (first, second):
        assert 0 < outcome.metrics["memory_bytes"] <= 6 * CLIP_BYTES
        assert 1 <= outcome.metrics["mean_keyframes_per_clip"] < 8
        assert Path(outcome.memory_file).is_file()
    # key frames let more clips than the 6 full clips the budget holds fit in
    assert second.metrics["memory_clips"] > 6
    assert trainer.memory is not None and trainer.memory.seen_classes == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="tasks come in order"):
        trainer.fit_task(0)


def test_full_clip_and_no_memory_modes(motion_dataset, tmp_path):
    # Execute
    full = _trainer(motion_dataset, tmp_path / "f", "replay_kd")
    none = _trainer(motion_dataset, tmp_path / "n", "finetune")
    full_out = [full.fit_task(t) for t in range(2)][-1]
    none_out = [none.fit_task(t) for t in range(2)][-1]

    # Assert: each of the 4 seen classes may use floor(6 clips / 4) = 1 full clip; fine-tuning keeps nothing
    assert full_out.metrics["memory_bytes"] == 4 * CLIP_BYTES and full_out.metrics["memory_clips"] == 4
    assert full_out.metrics["mean_keyframes_per_clip"] == 8.0
    assert "train_kd" in full_out.metrics
    assert none_out.memory_file is None and none_out.metrics["memory_bytes"] == 0.0
    assert none_out.metrics["replayed_clips"] == 0.0


def test_restore_from_saved_weights_and_memory_continues_exactly(motion_dataset, tmp_path):
    # Prepare: an uninterrupted trainer, and one that stops after task 0
    straight = _trainer(motion_dataset, tmp_path / "a")
    straight.fit_task(0)
    expected = straight.fit_task(1)
    stopped = _trainer(motion_dataset, tmp_path / "b")
    checkpoint = stopped.fit_task(0)

    # Execute: a fresh trainer picks up from the weights and the memory file
    resumed = _trainer(motion_dataset, tmp_path / "b")
    resumed.restore(1, checkpoint.state, checkpoint.memory_file)
    again = resumed.fit_task(1)

    # Assert: bit-identical weights and metrics
    assert set(again.state) == set(expected.state)
    for key in expected.state:
        np.testing.assert_array_equal(again.state[key], expected.state[key])
    np.testing.assert_array_equal(again.accuracy_row, expected.accuracy_row)
    assert again.metrics["memory_bytes"] == expected.metrics["memory_bytes"]


def test_keyframe_view_renders_new_clips_with_the_memorys_threshold(motion_dataset, tmp_path):
    # Prepare
    trainer = _trainer(motion_dataset, tmp_path / "v")
    new = trainer.split.task_rows(trainer.train, trainer.split.outputs_of_task(0))

    # Execute
    view = trainer._keyframe_view(new, 0)
    trainer.fit_task(0)

    # Assert: threshold = 1.5 x median step of the first task's clips, shared with the memory; every
    # clip keeps frame 0 and repeats a frame wherever it was not a key frame
    expected = KeyFrameSelector(rho=1.5).fit(new.clips)
    assert trainer.memory.keyframe_selector_.delta_ == pytest.approx(expected.delta_)
    mask = expected.keyframe_mask(new.clips)
    np.testing.assert_array_equal(view.clips[:, 0], new.clips[:, 0])
    repeated = (view.clips[:, 1:] == view.clips[:, :-1]).all(axis=(2, 3, 4))
    np.testing.assert_array_equal(repeated, ~mask[:, 1:])
    np.testing.assert_array_equal(view.labels, new.labels)
