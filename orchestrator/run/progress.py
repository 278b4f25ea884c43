"""A live progress line per round, for humans: a redrawn bar on a terminal, one line per round in logs.

Before round 1 it prints a line per start-up phase (starting Ray, generating the demo data, partitioning,
starting the device hosts; see :mod:`fedtwin.orchestrator.run.phases`) with its time: on a terminal the
phase shows while it runs and gets its time when it ends; in a log, one line when it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from fedtwin.orchestrator.run.callbacks import RunCallback


class ProgressPrinter(RunCallback):
    """Prints ``round k/N [#####-----] devices ok/failed | 3.1s | acc 0.812 | eta 40s``."""

    def __init__(self, stream: TextIO | None = None, unit: str = "round", width: int = 20) -> None:
        self.stream = stream or sys.stderr
        self.unit = unit
        self.width = width
        self.total = 0
        self._start = time.monotonic()
        self._first_step = 1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._local = self._where = ""  # the run's local working folder, and where the run lives

    def on_phase_start(self, text: str) -> None:
        """A start-up phase began: on a terminal, show it until it ends."""
        if self._tty:
            self._write(f"\r{text} ...")

    def on_phase_end(self, text: str, seconds: float, ok: bool = True) -> None:
        """A start-up phase ended: one line, ``partitioning | 1.2s`` (none for a phase that failed)."""
        line = f"{text} | {seconds:.1f}s\n" if ok else ""
        if self._tty:
            line = "\r" + " " * (len(text) + 4) + "\r" + line  # over the "text ..." shown meanwhile
        if line:
            self._write(line)

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        self.total = int(info.get("total_steps", 0))
        self._first_step = int(info.get("start_step", 1))
        self._start = time.monotonic()
        self.unit = str(info.get("unit", self.unit))
        resumed = f", resuming after {self.unit} {self._first_step - 1}" if self._first_step > 1 else ""
        where = info.get("run_location") or info.get("run_dir", "?")
        self._local, self._where = str(info.get("run_dir", "")), str(where)
        self._write(f"fedtwin: {info.get('recipe', 'run')} -> {where}{resumed}\n")

    def on_step_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        done = step - self._first_step + 1
        elapsed = time.monotonic() - self._start
        remaining = self.total - step
        eta = elapsed / max(done, 1) * remaining
        filled = int(self.width * step / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        parts = [f"{self.unit} {step}/{self.total} [{bar}]"]
        if "devices_ok" in metrics:
            parts.append(
                f"devices {metrics['devices_ok']}/{metrics['devices_ok'] + metrics.get('devices_failed', 0)} ok"
            )
        if "round_seconds" in metrics:
            parts.append(f"{metrics['round_seconds']:.1f}s")
        for key, label in (("test_accuracy", "acc"), ("accuracy", "acc"), ("test_loss", "loss")):
            if metrics.get(key) is not None:
                parts.append(f"{label} {metrics[key]:.3f}")
                if label == "acc":
                    break
        parts.append(f"eta {eta:.0f}s")
        line = " | ".join(parts)
        self._write(("\r" + line.ljust(100)) if self._tty else line + "\n")

    def on_checkpoint(self, step: int, path: Any) -> None:
        if not self._tty:
            shown = str(path)
            if self._local and shown.startswith(self._local):  # a URI run: name the checkpoint where it lives
                shown = self._where.rstrip("/") + shown[len(self._local) :]
            self._write(f"  checkpoint {shown}\n")

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        if self._tty:
            self._write("\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
