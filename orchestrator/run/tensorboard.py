"""TensorBoard event files beside ``metrics.jsonl``: every numeric metric of every step, as a scalar.

:class:`TensorBoardCallback` writes with tensorboardX (installed with Ray Tune) into the run folder
itself, so ``tensorboard --logdir runs`` lists each run under its folder name and overlays, say, a FedAvg
and a FedDU run. A resumed run purges the steps after its checkpoint, so TensorBoard shows one curve.

Records with a modelled clock (``sim_time_s``, the federated recipe's ``system:`` section) are written
a second time into ``<run>/sim_time``, a run of their own whose step is the modelled time in
milliseconds: TensorBoard then draws every metric against the deployment's time as well.
Nothing here may fail a run: without tensorboardX, or when writing fails, it logs one line and stops.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fedtwin.orchestrator.run.callbacks import RunCallback

logger = logging.getLogger(__name__)

#: Record keys that are the step itself, not a metric.
_STEP_KEYS = frozenset({"round", "epoch", "task", "session", "step"})


def scalars(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for every number in ``metrics``; nested mappings become ``outer/inner`` tags.

    Booleans count as 0/1; strings, lists and None are skipped, as are the step keys at the top level.
    """
    for key, value in metrics.items():
        tag = f"{prefix}{key}"
        if not prefix and key in _STEP_KEYS:
            continue
        if isinstance(value, Mapping):
            yield from scalars(value, prefix=f"{tag}/")
        elif isinstance(value, bool):
            yield tag, float(value)
        elif isinstance(value, (int, float)) or _is_numpy_number(value):
            yield tag, float(value)


def sim_step(sim_time_s: float) -> int:
    """The TensorBoard step of a modelled time: milliseconds (steps are integers)."""
    return int(round(sim_time_s * 1000))


def _is_numpy_number(value: Any) -> bool:
    return type(value).__module__ == "numpy" and getattr(value, "shape", None) == () and hasattr(value, "item")


class TensorBoardCallback(RunCallback):
    """Writes each step's numeric metrics to a TensorBoard event file; flushes every step.

    Args:
        log_dir: where the event file goes; default: the run folder (``info["run_dir"]`` at run start).
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.writer: Any = None
        self.sim_writer: Any = None  # <log_dir>/sim_time, opened with the first record that has sim_time_s
        self._log_dir: Path | None = None
        self._sim_resume_ms: int | None = None  # a resumed run's modelled time: later sim steps are purged
        self.disabled = False

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        """Open a new event file; a resumed run (``start_step`` > 1) purges the steps it will redo."""
        try:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog
        except ImportError:
            self._disable("tensorboardX is not installed (pip install tensorboardX)")
            return
        log_dir = self.log_dir or Path(str(info["run_dir"]))
        start = int(info.get("start_step", 1) or 1)
        self._log_dir = log_dir
        if start > 1 and info.get("sim_time_s") is not None:
            self._sim_resume_ms = sim_step(float(info["sim_time_s"])) + 1
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            # The nanosecond suffix keeps a resumed run's file distinct from (and sorted after) the
            # first one even within one second; TensorBoard reads files in name order.
            self.writer = EventsWriter(str(log_dir / "events"), f".{time.time_ns()}")
            if start > 1:  # the marker TensorBoard uses to drop earlier events at steps >= start
                self.writer.write_event(
                    Event(step=start, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START))
                )
            self.writer.flush()
        except Exception as err:  # noqa: BLE001 (TensorBoard is an extra; the run goes on without it)
            self._disable(f"cannot write TensorBoard events in {log_dir} ({err})")

    def on_step_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Every finite numeric metric of the step as a scalar at ``step``, in one event, flushed."""
        if self.writer is None:
            return
        try:
            from tensorboardX.proto.event_pb2 import Event
            from tensorboardX.proto.summary_pb2 import Summary

            values = [Summary.Value(tag=tag, simple_value=v) for tag, v in scalars(metrics) if math.isfinite(v)]
            if values:
                self.writer.write_event(Event(step=int(step), wall_time=time.time(), summary=Summary(value=values)))
                self.writer.flush()
            if values and metrics.get("sim_time_s") is not None:  # the same scalars against modelled time
                at = sim_step(float(metrics["sim_time_s"]))
                self._sim_events().write_event(Event(step=at, wall_time=time.time(), summary=Summary(value=values)))
                self.sim_writer.flush()
        except Exception as err:  # noqa: BLE001
            self._disable(f"writing TensorBoard events failed ({err})")

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        """Close the event file."""
        self.close()

    def _sim_events(self) -> Any:
        """The ``sim_time`` run's event file (opened on first use; purged after a resume point)."""
        if self.sim_writer is None:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            folder = Path(str(self._log_dir)) / "sim_time"
            folder.mkdir(parents=True, exist_ok=True)
            self.sim_writer = EventsWriter(str(folder / "events"), f".{time.time_ns()}")
            if self._sim_resume_ms is not None:
                marker = SessionLog(status=SessionLog.START)
                self.sim_writer.write_event(Event(step=self._sim_resume_ms, wall_time=time.time(), session_log=marker))
        return self.sim_writer

    def close(self) -> None:
        """Flush and close the event files (idempotent)."""
        for name in ("writer", "sim_writer"):
            writer = getattr(self, name)
            setattr(self, name, None)
            if writer is not None:
                try:
                    writer.close()
                except Exception as err:  # noqa: BLE001
                    logger.warning("closing TensorBoard event files failed (%s)", err)

    def _disable(self, why: str) -> None:
        if not self.disabled:
            logger.warning("%s; skipping TensorBoard", why)
        self.disabled = True
        for name in ("writer", "sim_writer"):
            writer = getattr(self, name)
            setattr(self, name, None)
            if writer is not None:
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 (already failing; the warning above is enough)
                    pass
