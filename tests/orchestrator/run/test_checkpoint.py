"""Atomic checkpoints: round trip, pruning, no visible half-written directory, and checksums that find
a file cut short, a flipped byte, a missing file or an edited ``meta.json``."""

import hashlib
import json
import re

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.numpy import save_file

from fedtwin.orchestrator.run.checkpoint import (
    CheckpointError,
    checkpoint_problem,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    newest_usable_checkpoint,
    save_checkpoint,
)


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
    (tmp_path / ".step-00005.abc.tmp").mkdir()  # what a crash mid-write leaves behind
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-00003", "step-00004"]
    assert latest_checkpoint(tmp_path).round_num == 4


def test_failed_write_leaves_no_checkpoint(tmp_path):
    bad = {"w": object()}  # safetensors cannot write this: the staged dir must vanish
    with pytest.raises(SafetensorError):
        save_checkpoint(tmp_path, 1, bad, {}, {})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- checks
def _three(tmp_path, keep=3):
    for r in (1, 2, 3):
        save_checkpoint(
            tmp_path, r, {"w": np.full(64, r, np.float32)}, {"s": {"m": np.ones(8) * r}}, {"k": r}, keep=keep
        )
    return tmp_path / "step-00003"


def _truncate(path):
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-40])


def _flip(path):
    file = path / "state.safetensors"
    data = bytearray(file.read_bytes())
    data[-3] ^= 0xFF  # inside the array bytes: safetensors itself would load this without complaint
    file.write_bytes(bytes(data))


def _remove(path):
    (path / "model.safetensors").unlink()


def _edit_meta(path):
    meta = json.loads((path / "meta.json").read_text())
    meta["k"] = 99  # valid JSON, wrong content
    (path / "meta.json").write_text(json.dumps(meta))


DAMAGE = {
    "truncated": (_truncate, "model.safetensors has"),
    "bytes-flipped": (_flip, "state.safetensors does not match its checksum"),
    "file-missing": (_remove, "model.safetensors is missing"),
    "meta-edited": (_edit_meta, "meta.json does not match its checksum"),
}


def test_meta_records_size_and_sha256_of_each_file(tmp_path):
    path = _three(tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    for name in ("model.safetensors", "state.safetensors"):
        data = (path / name).read_bytes()
        assert meta["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert meta["step"] == 3 and len(meta["meta_sha256"]) == 64
    assert checkpoint_problem(path) is None
    assert load_checkpoint(path).meta == {"k": 3, "step": 3}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damage_is_found_and_the_older_checkpoint_is_used(tmp_path, how):
    damage, reason = DAMAGE[how]
    path = _three(tmp_path)
    damage(path)
    assert reason in checkpoint_problem(path)
    with pytest.raises(CheckpointError, match="step-00003: damaged checkpoint: " + re.escape(reason)):
        load_checkpoint(path)
    ckpt, skipped = newest_usable_checkpoint(tmp_path)
    assert ckpt.step == 2 and float(ckpt.model["w"][0]) == 2.0
    assert [name for name, _ in skipped] == ["step-00003"] and reason in skipped[0][1]


def test_a_folder_without_meta_json_is_skipped_with_a_reason_and_none_usable_is_empty(tmp_path):
    _three(tmp_path)
    (tmp_path / "step-00003" / "meta.json").unlink()
    for name in ("step-00001", "step-00002"):
        _truncate(tmp_path / name)
    ckpt, skipped = newest_usable_checkpoint(tmp_path)
    assert ckpt is None
    assert [n for n, _ in skipped] == ["step-00003", "step-00002", "step-00001"]
    assert "meta.json is missing" in skipped[0][1]


def test_checkpoints_of_older_versions_load_without_checksums(tmp_path):
    # Prepare: what fedtwin 0.2 wrote: round-XXXXX, round_num in meta.json, no file list
    old = tmp_path / "round-00004"
    old.mkdir()
    save_file({"w": np.arange(3, dtype=np.float32)}, str(old / "model.safetensors"))
    save_file({"a0": np.ones(2)}, str(old / "state.safetensors"))
    (old / "meta.json").write_text(
        json.dumps({"recipe": "federated", "round_num": 4, "scalars": {"m": {"__array__": "a0"}}})
    )
    # Execute
    ckpt = latest_checkpoint(tmp_path)
    # Assert
    assert ckpt.step == ckpt.round_num == 4 and ckpt.meta["recipe"] == "federated"
    np.testing.assert_array_equal(ckpt.extra["m"], np.ones(2))
    # a new checkpoint of a later step sorts after it; the same step replaces the old folder
    save_checkpoint(tmp_path, 5, {"w": np.zeros(3, np.float32)}, {}, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["round-00004", "step-00005"]
    save_checkpoint(tmp_path, 4, {"w": np.zeros(3, np.float32)}, {}, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00004"]  # step 5 was stale: replayed


def test_pruning_keeps_two_even_with_keep_one(tmp_path):
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, r, {"w": np.zeros(2, np.float32)}, {}, {}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00002", "step-00003"]
