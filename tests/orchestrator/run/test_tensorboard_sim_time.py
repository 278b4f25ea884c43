"""TensorBoard against modelled time: records with ``sim_time_s`` also go to ``<run>/sim_time``."""

from __future__ import annotations

import struct

import pytest

from fedtwin.orchestrator.run.tensorboard import TensorBoardCallback

pytest.importorskip("tensorboardX")


def read_events(log_dir):
    """(step, {tag: value}, session_log status) of every event in the event files right under ``log_dir``."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            values = {v.tag: v.simple_value for v in event.summary.value}
            out.append((event.step, values, event.session_log.status if event.HasField("session_log") else None))
    return out


def end_step(cb: TensorBoardCallback, step: int, record: dict) -> None:
    hook = getattr(type(cb), "on_step_end", None) or type(cb).on_round_end
    hook(cb, step, record)


def test_metrics_are_written_against_modelled_milliseconds_too(tmp_path):
    records = [
        {"round": 1, "test_accuracy": 0.25, "sim_round_s": 1.5, "sim_time_s": 1.5},
        {"round": 2, "test_accuracy": 0.5, "sim_round_s": 2.25, "sim_time_s": 3.75},
    ]
    cb = TensorBoardCallback()
    cb.on_run_start({"run_dir": str(tmp_path), "start_step": 1})
    for r in records:
        end_step(cb, r["round"], r)
    cb.close()
    by_round = [(s, v["test_accuracy"]) for s, v, _ in read_events(tmp_path) if v]
    by_time = [(s, v["test_accuracy"]) for s, v, _ in read_events(tmp_path / "sim_time") if v]
    assert by_round == [(1, 0.25), (2, 0.5)]
    assert by_time == [(1500, 0.25), (3750, 0.5)]
    # a resumed run (after round 1) marks the modelled time after which TensorBoard drops old events
    again = TensorBoardCallback()
    again.on_run_start({"run_dir": str(tmp_path), "start_step": 2, "sim_time_s": 1.5})
    end_step(again, 2, records[1])
    again.close()
    markers = [s for s, _, status in read_events(tmp_path / "sim_time") if status]
    assert markers == [1501]


def test_records_without_a_clock_write_no_sim_time_run(tmp_path):
    cb = TensorBoardCallback()
    cb.on_run_start({"run_dir": str(tmp_path), "start_step": 1})
    end_step(cb, 1, {"round": 1, "test_accuracy": 0.25})
    cb.close()
    assert not (tmp_path / "sim_time").exists()
