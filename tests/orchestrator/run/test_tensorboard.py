"""TensorBoardCallback: event files with every numeric metric, read back record by record."""

from __future__ import annotations

import logging
import struct
import sys
from pathlib import Path

import pytest

from fedtwin.orchestrator.run.tensorboard import TensorBoardCallback, scalars

pytest.importorskip("tensorboardX")


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every event file under ``log_dir`` (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])  # skip the length's CRC
            pos += 12 + length + 4  # and the payload's CRC
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_every_numeric_metric_of_every_step_is_written(tmp_path):
    # Prepare
    cb = TensorBoardCallback()
    records = [
        {
            "round": n,
            "test_accuracy": 0.5 + n / 10,
            "devices_ok": 20,
            "failed_devices": [3],
            "strategy": "feddu",
            "server": {"alpha_t": 0.1 * n},
            "skipped": n == 2,
            "test_loss": None,
        }
        for n in (1, 2, 3)
    ]

    # Execute
    cb.on_run_start({"run_dir": str(tmp_path), "start_step": 1, "total_steps": 3})
    for record in records:
        cb.on_step_end(record["round"], record)
    events_before_end = read_scalars(tmp_path)  # flushed each step: readable while the run goes on
    cb.on_run_end({"final_test_accuracy": 0.8})

    # Assert
    got = read_scalars(tmp_path)
    assert set(got) == {"test_accuracy", "devices_ok", "server/alpha_t", "skipped"}
    assert [s for s, _ in got["test_accuracy"]] == [1, 2, 3]
    assert [v for _, v in got["test_accuracy"]] == pytest.approx([0.6, 0.7, 0.8])
    assert [v for _, v in got["server/alpha_t"]] == pytest.approx([0.1, 0.2, 0.3])
    assert [v for _, v in got["skipped"]] == [0.0, 1.0, 0.0]
    assert events_before_end["devices_ok"] == [(1, 20.0), (2, 20.0), (3, 20.0)]
    assert cb.writer is None  # closed


def test_scalars_skip_the_step_key_text_and_lists():
    assert dict(scalars({"epoch": 4, "acc": 1, "name": "x", "hist": [1, 2], "m": {"a": 2.5}})) == {
        "acc": 1.0,
        "m/a": 2.5,
    }


def test_without_tensorboardx_the_run_goes_on_with_one_log_line(tmp_path, monkeypatch, caplog):
    # Prepare: make the import fail (submodules imported by other tests included)
    for name in [m for m in sys.modules if m == "tensorboardX" or m.startswith("tensorboardX.")] + ["tensorboardX"]:
        monkeypatch.setitem(sys.modules, name, None)
    cb = TensorBoardCallback()

    # Execute
    with caplog.at_level(logging.WARNING, logger="fedtwin.orchestrator.run.tensorboard"):
        cb.on_run_start({"run_dir": str(tmp_path), "start_step": 1})
        cb.on_step_end(1, {"round": 1, "test_accuracy": 0.5})
        cb.on_run_end({})

    # Assert
    assert [r.getMessage() for r in caplog.records] == [
        "tensorboardX is not installed (pip install tensorboardX); skipping TensorBoard"
    ]
    assert not list(tmp_path.iterdir())


def test_a_failing_writer_disables_itself_instead_of_failing_the_run(tmp_path, caplog):
    cb = TensorBoardCallback(tmp_path / "tb")
    cb.on_run_start({"run_dir": str(tmp_path), "start_step": 1})

    class Broken:
        def write_event(self, *args, **kwargs):
            raise OSError("disk full")

        def close(self):
            pass

    cb.writer = Broken()
    with caplog.at_level(logging.WARNING, logger="fedtwin.orchestrator.run.tensorboard"):
        cb.on_step_end(1, {"round": 1, "acc": 0.5})
        cb.on_step_end(2, {"round": 2, "acc": 0.6})
    assert cb.writer is None and len(caplog.records) == 1 and "disk full" in caplog.records[0].getMessage()


def test_a_resumed_run_purges_the_steps_it_redoes(tmp_path):
    # Prepare: a first run wrote steps 1..4 and died; the checkpoint was after step 2
    first = TensorBoardCallback()
    first.on_run_start({"run_dir": str(tmp_path), "start_step": 1})
    for n in range(1, 5):
        first.on_step_end(n, {"round": n, "acc": float(n)})
    first.close()

    # Execute
    resumed = TensorBoardCallback()
    resumed.on_run_start({"run_dir": str(tmp_path), "start_step": 3})
    for n in (3, 4):
        resumed.on_step_end(n, {"round": n, "acc": 10.0 * n})
    resumed.on_run_end({})

    # Assert: the second file starts with a purge marker at step 3 (TensorBoard drops the old 3 and 4)
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2
    assert [v for _, v in read_scalars(tmp_path)["acc"]] == [1.0, 2.0, 3.0, 4.0, 30.0, 40.0]
    data = b"".join(p.read_bytes() for p in files)
    purges, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = Event.FromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            purges.append(event.step)
    assert purges == [3]
