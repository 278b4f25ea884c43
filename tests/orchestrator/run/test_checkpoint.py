"""Atomic checkpoints: round trip, pruning, and no visible half-written directory."""

import numpy as np
import pytest

from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint


def test_round_trip_nested_extra(tmp_path):
    model = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    extra = {
        "strategy": {"velocity/w": np.ones(3), "step": np.array(5.0)},
        "devices": {"4": {"rounds_trained": 2, "m": {"w": np.zeros(2)}}},
    }
    path = save_checkpoint(tmp_path, 3, model, extra, {"recipe": "federated"})
    ckpt = load_checkpoint(path)
    assert ckpt.round_num == 3 and ckpt.meta["recipe"] == "federated"
    np.testing.assert_array_equal(ckpt.model["w"], model["w"])
    np.testing.assert_array_equal(ckpt.extra["strategy"]["velocity/w"], np.ones(3))
    assert ckpt.extra["strategy"]["step"].shape == () and float(ckpt.extra["strategy"]["step"]) == 5.0
    assert ckpt.extra["devices"]["4"]["rounds_trained"] == 2
    np.testing.assert_array_equal(ckpt.extra["devices"]["4"]["m"]["w"], np.zeros(2))


def test_keeps_newest_and_ignores_temp_dirs(tmp_path):
    for r in (1, 2, 3, 4):
        save_checkpoint(tmp_path, r, {"w": np.full(2, r, np.float32)}, {}, {}, keep=2)
    (tmp_path / ".round-00005.abc.tmp").mkdir()  # what a crash mid-write leaves behind
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["round-00003", "round-00004"]
    assert latest_checkpoint(tmp_path).round_num == 4


def test_failed_write_leaves_no_checkpoint(tmp_path):
    bad = {"w": object()}  # safetensors cannot write this: the staged dir must vanish
    with pytest.raises(Exception):
        save_checkpoint(tmp_path, 1, bad, {}, {})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []
