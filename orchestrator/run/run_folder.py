"""The run folder: resolved spec, per-round metrics, checkpoints, summary and plots.

```
runs/<name>-<YYYYmmdd-HHMMSS>/
  spec.yaml  metrics.jsonl  checkpoints/step-XXXXX/  summary.json  plots/*.png
```

The folder may live on object storage (``run.output_dir: s3://bucket/runs``). Recipes and callbacks
always write into :attr:`RunFolder.path`, a local working folder; for a URI run that is a temporary
folder on the driver's node, mirrored to :attr:`RunFolder.location`:

- ``spec.yaml`` and ``metrics.jsonl`` are uploaded whenever they change (one small PUT per step);
- a checkpoint is published by uploading its files and then its ``meta.json`` (the marker readers
  look for), after deleting the old marker of a round that is written again; pruned checkpoints
  lose their marker first;
- everything else (plots, TensorBoard events, the summary) is uploaded at each checkpoint and at the end.

``--resume s3://...`` downloads the folder's files (``spec.yaml``, ``metrics.jsonl``, a recipe's own files)
and its newest complete checkpoint that checks out (sizes and checksums in its ``meta.json``; newer ones
that do not are downloaded too, so the loop can name them in its warning) into a fresh working folder
and goes on from there. Run folders of fedtwin 0.2 and earlier have ``checkpoints/round-XXXXX/``: they
resume the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.atomic_write import write_json_atomic, write_text_atomic
from fedtwin.pipelines.core.errors import FedtwinError

CHECKPOINT_MARKER = "meta.json"


class RunFolder:
    """One run's folder: ``path`` is where it is written locally, ``location`` where it lives (a path or a URI)."""

    def __init__(self, path: str | Path, location: str | None = None) -> None:
        self.path = Path(path)
        self.location: str = location if location is not None else str(self.path)
        self.remote = storage.is_remote(self.location)
        self._uploaded: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> RunFolder:
        """A new, empty run folder ``<output_dir>/<name>-<timestamp>`` (suffixed if it exists)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if storage.is_remote(output_dir):
            uri = storage.join(str(output_dir), f"{name}-{stamp}")
            location, n = uri, 1
            while storage.exists(location):  # no atomic mkdir on object stores: the timestamp keeps runs apart
                n += 1
                location = f"{uri}-{n}"
            return cls(_working_dir(name), location)
        base = Path(storage.as_location(output_dir)) / f"{name}-{stamp}"
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
        """An existing run folder, ready to resume (a URI's state is downloaded); it must hold ``spec.yaml``."""
        spec_to_resume(path)
        return cls.attach(path, resume=True)

    @classmethod
    def attach(cls, run_dir: str | Path, resume: bool) -> RunFolder:
        """The folder ``run_experiment`` was given: local as is; a URI gets a working folder, filled on resume."""
        if not storage.is_remote(run_dir):
            return cls(storage.as_location(run_dir))
        folder = cls(_working_dir(storage.name_of(str(run_dir))), str(run_dir))
        if resume:
            folder.download_state()
        return folder

    def download_state(self) -> None:
        """Fetch the run folder into the working folder: every file outside ``checkpoints/`` (spec, metrics,
        and what a recipe keeps beside them, e.g. an exemplar memory or traces) and the newest complete
        checkpoint that checks out, after any newer damaged ones (the loop skips those with a warning)."""
        from fedtwin.orchestrator.run.checkpoint import checkpoint_problem

        self._uploaded.clear()
        for rel in storage.list_files(self.location):
            if not rel.startswith("checkpoints/"):
                local = self.path / rel
                storage.download_file(storage.join(self.location, rel), local)
                stat = local.stat()
                self._uploaded[rel] = (stat.st_size, stat.st_mtime_ns)  # already there: not uploaded again
        for name in reversed(remote_checkpoints(self.location)):
            storage.download_dir(storage.join(self.location, "checkpoints", name), self.checkpoints / name)
            if checkpoint_problem(self.checkpoints / name) is None:
                break

    # ------------------------------------------------------------------ state
    def has_progress(self) -> bool:
        """Whether any step finished here (a metrics line or a checkpoint): something to resume from."""
        return bool(self.read_metrics()) or (self.checkpoints.is_dir() and any(self.checkpoints.iterdir()))

    def remove(self) -> None:
        """Delete the folder and everything in it (a start that failed before its first step)."""
        if self.remote:
            storage.delete_dir(self.location)
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        """Upload what changed and drop the local working folder of a URI run (a local run keeps its folder)."""
        if not self.remote:
            return
        try:
            self.sync()
        finally:
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

    # ------------------------------------------------------------------ files
    def save_spec(self, spec: Mapping[str, Any]) -> None:
        """Write the resolved spec as YAML."""
        write_text_atomic(self.path / "spec.yaml", yaml.safe_dump(dict(spec), sort_keys=False))
        self._upload("spec.yaml")

    def load_spec(self) -> dict[str, Any]:
        """Read ``spec.yaml`` back as a dict."""
        from fedtwin.orchestrator.config.files import read_mapping

        if self.remote and not (self.path / "spec.yaml").is_file():
            storage.download_file(storage.join(self.location, "spec.yaml"), self.path / "spec.yaml")
        return read_mapping(self.path / "spec.yaml", what="run spec")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._upload("metrics.jsonl")

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
        self._upload("metrics.jsonl")

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically (and upload everything that changed)."""
        write_json_atomic(self.path / "summary.json", dict(summary))
        self.sync()

    # ------------------------------------------------------------------ object storage
    def publish_checkpoint(self, ckpt: Path) -> None:
        """Upload a finished local checkpoint (marker last), prune the remote ones pruned here, sync the rest."""
        if not self.remote:
            return
        remote = storage.join(self.location, "checkpoints", ckpt.name)
        storage.delete_file(storage.join(remote, CHECKPOINT_MARKER))  # a round written again: hide it first
        storage.upload_dir(ckpt, remote, last=[CHECKPOINT_MARKER])
        kept = {p.name for p in self.checkpoints.iterdir()} if self.checkpoints.is_dir() else set()
        for name in remote_checkpoints(self.location):
            if name not in kept:
                old = storage.join(self.location, "checkpoints", name)
                storage.delete_file(storage.join(old, CHECKPOINT_MARKER))
                storage.delete_dir(old)
        self.sync()

    def sync(self) -> None:
        """Upload every file outside ``checkpoints/`` that changed since its last upload (URI runs only)."""
        if not self.remote or not self.path.is_dir():
            return
        for file in sorted(self.path.rglob("*")):
            rel = file.relative_to(self.path).as_posix()
            if file.is_file() and not rel.startswith("checkpoints/") and not file.name.startswith("."):
                self._upload(rel)

    def _upload(self, rel: str) -> None:
        if not self.remote:
            return
        file = self.path / rel
        stat = file.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._uploaded.get(rel) == stamp:
            return
        storage.upload_file(file, storage.join(self.location, rel))
        self._uploaded[rel] = stamp


def spec_to_resume(path: str | Path) -> str:
    """The ``spec.yaml`` of the run folder ``path`` (a path or a URI) that ``--resume`` names.

    Raises:
        FedtwinError: no ``spec.yaml`` there; ``StorageError`` for a bad URI (scheme, bucket, credentials).
    """
    storage.check_location(path, "--resume")
    spec_file = storage.join(str(storage.as_location(path)), "spec.yaml")
    if not storage.is_remote(spec_file):
        from fedtwin.orchestrator.config.names import path_problem

        problem = path_problem(spec_file)
        if problem is not None:
            raise FedtwinError(f"--resume {path}: the path {problem}; pass a folder created by `fedtwin run`")
    if not storage.is_file(spec_file):
        raise FedtwinError(f"--resume {path}: no spec.yaml there; pass a folder created by `fedtwin run`")
    return spec_file


def remote_checkpoints(location: str) -> list[str]:
    """Names of the complete checkpoints (``meta.json`` present) of a run folder at ``location``, oldest first."""
    from fedtwin.orchestrator.run.checkpoint import step_of

    root = storage.join(location, "checkpoints")
    names = [n for n in storage.list_dir(root) if step_of(n) is not None]
    complete = [n for n in names if storage.is_file(storage.join(root, n, CHECKPOINT_MARKER))]
    return sorted(complete, key=lambda n: (step_of(n) or 0, int(n.startswith("step-"))))


def _working_dir(name: str) -> Path:
    """A fresh local working folder for a run that lives on object storage."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]
    return Path(tempfile.mkdtemp(prefix=f"fedtwin-run-{safe}-"))
