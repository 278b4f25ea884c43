"""Ray's own messages of an embedded Ray: into the run's ``ray.log``, off the terminal.

fedtwin's embedded Ray is fedtwin's business, not the user's: Ray's log records in the driver (its
``ray`` logger, e.g. the note that token authentication is on) and the output of the run's worker
processes are kept from the terminal and written to ``ray.log`` in the run folder instead. Records from
before the run folder exists (Ray's start) are held in memory and written when it does. With ``show``
(``fedtwin -v``) they reach the terminal as well, as Ray prints them. An attached cluster is left alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

LOG_NAME = "ray.log"
_DISPATCH_NAME = "fedtwin_run_log"
_EVENT_MARK = ":event_summary:"  # how Ray's autoscaler marks the lines of its output worth showing
_MAX_HELD = 10_000  # lines held before the run folder exists (Ray's start writes a handful)


class _ToRunLog(logging.Handler):
    def __init__(self, sink: RayLogSink) -> None:
        super().__init__(logging.INFO)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record))
        except Exception:  # noqa: BLE001 (logging must never fail the run)
            self.handleError(record)


class RayLogSink:
    """Takes over the ``ray`` logger (and the worker output Ray forwards) until :meth:`close`."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self._lock = threading.Lock()
        self._held: list[str] = []
        self._file: IO[str] | None = None
        self._logger = logging.getLogger("ray")
        self._saved_handlers = list(self._logger.handlers)
        self._saved_level = self._logger.level
        self._handler = _ToRunLog(self)
        self._dispatch = False

    def install(self) -> None:
        """Before ``ray.init``: Ray's records go here (and to the terminal only with ``show``)."""
        if not self.show:
            for handler in self._saved_handlers:
                self._logger.removeHandler(handler)
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.INFO)

    def take_worker_output(self) -> None:
        """After ``ray.init(log_to_driver=True)``: worker output goes here instead of to the terminal."""
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:  # moved in a later Ray: it stays as Ray prints it
            return
        if not self.show:
            dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler(_DISPATCH_NAME, self._worker_lines)
        self._dispatch = True

    def attach(self, folder: Path) -> Path:
        """Write what was held, and everything after, to ``folder/ray.log``."""
        path = Path(folder) / LOG_NAME
        with self._lock:
            if self._file is None:
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
                self._file.writelines(line + "\n" for line in self._held)
                self._file.flush()
                self._held.clear()
        return path

    def write(self, line: str) -> None:
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            elif len(self._held) < _MAX_HELD:
                self._held.append(line)

    def close(self) -> None:
        """Give the ``ray`` logger back its handlers and level; close the file."""
        if self._dispatch:
            try:
                from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

                dispatcher.remove_handler(_DISPATCH_NAME)
            except ImportError:
                pass
        self._logger.removeHandler(self._handler)
        for handler in self._saved_handlers:
            if handler not in self._logger.handlers:
                self._logger.addHandler(handler)
        self._logger.setLevel(self._saved_level)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _worker_lines(self, data: Mapping[str, Any]) -> None:
        lines = list(data.get("lines", ()))
        if data.get("pid") == "autoscaler":  # its status table every few seconds: keep only its events, as Ray does
            lines = [line.split(_EVENT_MARK, 1)[1].strip() for line in lines if _EVENT_MARK in line]
            who = "autoscaler"
        else:
            who = f"{data.get('actor_name') or data.get('task_name') or 'worker'} pid={data.get('pid')}"
        stream = "stderr" if data.get("is_err") else "stdout"
        for line in lines:
            self.write(f"({who} {stream}) {line}")
