"""Streamed checkpoint sections: per-device state written chunk by chunk into its own checksummed files,
read back whole or one chunk at a time (only the entries asked for), damage found like in any other
data file; and the byte-bounded chunking of device state, by hand."""

import json

import numpy as np
import pytest

from fedtwin.orchestrator.run.checkpoint import checkpoint_problem, checkpoint_section, load_checkpoint, save_checkpoint
from fedtwin.orchestrator.run.checkpoint_sections import StreamedSection
from fedtwin.pipelines.federated.state_chunks import ENTRY_BYTES, chunk_by_bytes, state_nbytes

MODEL = {"w": np.arange(4, dtype=np.float32)}


def _device(d):
    return {"rounds_trained": d, "control_variate": {"w": np.full(3, d, np.float32), "b": np.array(float(d))}}


def _write_three_chunks(writer):
    for chunk in ([0, 2], [4], [1, 3]):
        writer.write({str(d): _device(d) for d in chunk})


def test_a_section_round_trips_whole_and_chunk_by_chunk(tmp_path):
    path = save_checkpoint(
        tmp_path, 2, MODEL, {"strategy": {"c": np.ones(2)}}, {}, sections={"devices": _write_three_chunks}
    )
    meta = json.loads((path / "meta.json").read_text())
    files = ["devices-00000.safetensors", "devices-00001.safetensors", "devices-00002.safetensors"]
    assert meta["sections"] == {"devices": files} and set(files) < set(meta["files"])
    ckpt = load_checkpoint(path)
    devices = ckpt.extra["devices"]
    assert isinstance(devices, StreamedSection) and sorted(devices) == ["0", "1", "2", "3", "4"]
    for d in range(5):
        assert devices[str(d)]["rounds_trained"] == d
        np.testing.assert_array_equal(devices[str(d)]["control_variate"]["w"], np.full(3, d, np.float32))
        assert devices[str(d)]["control_variate"]["b"].shape == ()
    np.testing.assert_array_equal(ckpt.extra["strategy"]["c"], np.ones(2))
    # one chunk at a time, only the odd devices (the chunk of device 4 has none: skipped)
    odd = list(devices.chunks(lambda key: int(key) % 2 == 1))
    assert [sorted(c) for c in odd] == [["1", "3"]]
    assert [sorted(c) for c in checkpoint_section(path, "devices").chunks()] == [["0", "2"], ["4"], ["1", "3"]]
    assert checkpoint_section(path, "other") is None


def test_damage_to_a_section_file_is_found(tmp_path):
    path = save_checkpoint(tmp_path, 1, MODEL, {}, {}, sections={"devices": _write_three_chunks})
    assert checkpoint_problem(path) is None
    file = path / "devices-00001.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    assert checkpoint_problem(path) == "devices-00001.safetensors does not match its checksum (damaged)"
    file.unlink()
    assert checkpoint_problem(path) == "devices-00001.safetensors is missing"


def test_a_section_may_not_shadow_an_extra_key(tmp_path):
    with pytest.raises(ValueError, match="devices"):
        save_checkpoint(tmp_path, 1, MODEL, {"devices": {}}, {}, sections={"devices": _write_three_chunks})
    assert list(tmp_path.iterdir()) == []


def test_device_state_is_chunked_by_bytes():
    # 3 float32 and one 0-d float64: 12 + 8 bytes; 4 entries (rounds_trained, control_variate, w, b)
    assert state_nbytes(_device(1)) == 12 + 8 + 4 * ENTRY_BYTES
    assert state_nbytes({"rounds_trained": 0}) == ENTRY_BYTES
    sizes = [(0, 10), (1, 10), (2, 25), (3, 1), (4, 9)]
    assert chunk_by_bytes(sizes, 20) == [[0, 1], [2], [3, 4]]  # device 2 alone: larger than the budget
    assert chunk_by_bytes(sizes, 1000) == [[0, 1, 2, 3, 4]]
    assert chunk_by_bytes([], 10) == []
    with pytest.raises(ValueError):
        chunk_by_bytes(sizes, 0)
