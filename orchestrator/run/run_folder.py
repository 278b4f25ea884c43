"""The run folder: resolved spec, per-round metrics, checkpoints, summary and plots.

```
runs/<name>-<YYYYmmdd-HHMMSS>/
  spec.yaml  metrics.jsonl  checkpoints/round-XXXXX/  summary.json  plots/*.png
```
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.atomic_write import write_json_atomic, write_text_atomic
from pipelines.core.errors import FedtwinError


class RunFolder:
    """One run's directory on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> RunFolder:
        """A new, empty run folder ``<output_dir>/<name>-<timestamp>`` (suffixed if it exists)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(output_dir) / f"{name}-{stamp}"
        path, n = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        return cls(path)

    @classmethod
    def open_existing(cls, path: str | Path) -> RunFolder:
        """An existing run folder (for ``--resume``); it must hold ``spec.yaml``."""
        folder = cls(path)
        if not (folder.path / "spec.yaml").is_file():
            raise FedtwinError(f"--resume {path}: no spec.yaml there; pass a folder created by `fedtwin run`")
        return folder

    def has_progress(self) -> bool:
        """Whether any step finished here (a metrics line or a checkpoint): something to resume from."""
        return bool(self.read_metrics()) or (self.checkpoints.is_dir() and any(self.checkpoints.iterdir()))

    def remove(self) -> None:
        """Delete the folder and everything in it (a start that failed before its first step)."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def checkpoints(self) -> Path:
        """Where checkpoints go."""
        return self.path / "checkpoints"

    @property
    def plots(self) -> Path:
        """Where plots go."""
        return self.path / "plots"

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    def save_spec(self, spec: Mapping[str, Any]) -> None:
        """Write the resolved spec as YAML."""
        write_text_atomic(self.path / "spec.yaml", yaml.safe_dump(dict(spec), sort_keys=False))

    def load_spec(self) -> dict[str, Any]:
        """Read ``spec.yaml`` back as a dict."""
        from orchestrator.config.files import read_mapping

        return read_mapping(self.path / "spec.yaml", what="run spec")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete metric lines (a torn last line from a crash is ignored)."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def truncate_metrics(self, last_round: int, key: str = "round") -> None:
        """Keep only records up to ``last_round`` (on resume, rounds after the checkpoint are replayed)."""
        kept = [r for r in self.read_metrics() if int(r.get(key, 0)) <= last_round]
        write_text_atomic(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        write_json_atomic(self.path / "summary.json", dict(summary))
