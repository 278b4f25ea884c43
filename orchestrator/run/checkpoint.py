"""Checkpoints: weights, strategy state and device-local state, written atomically, checked when read.

Layout of ``checkpoints/step-00010/``: ``model.safetensors`` (the global state), ``state.safetensors``
(strategy and device arrays, flattened keys), the chunk files of any streamed section (e.g.
``devices-00000.safetensors``: per-device state written one chunk at a time, see
:mod:`~fedtwin.orchestrator.run.checkpoint_sections`) and ``meta.json`` (step, scalars, dataset hash, the
files of each section, and the size and SHA-256 of every other file, plus a SHA-256 of ``meta.json``'s
own content). Loading
uses safetensors only, never pickle, and checks every recorded size and checksum first, so a file cut
short, a flipped byte or a missing file is found before anything is restored. Sampling and device seeds
derive from ``(seed, step, device)``, so no RNG stream needs saving: resuming after step s replays steps
s+1.. exactly.

Runs written by fedtwin 0.2 and earlier have ``round-00010`` folders and no checksums: they are read as
well (their files are still parsed with safetensors, which catches most damage, but not all).

Locally a checkpoint is written into a temporary folder and renamed into place. Object stores have no
rename: :meth:`fedtwin.orchestrator.run.run_folder.RunFolder.publish_checkpoint` uploads the files and then
``meta.json``, the marker :func:`list_checkpoints` (and its remote twin) require, so a reader never
takes a half-uploaded checkpoint. Pruning keeps at least two checkpoints, so a damaged newest one
always has an older one to fall back to (:func:`newest_usable_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fedtwin.orchestrator.run.checkpoint_sections import (
    SectionWriter,
    StreamedSection,
    contiguous,
    flatten_tree,
    unflatten_tree,
)
from fedtwin.pipelines.core.atomic_write import atomic_directory
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.model.state import ModelState

#: Checkpoint folder names: ``step-00010`` (and ``round-00010``, written by fedtwin 0.2 and earlier).
STEP_DIR = re.compile(r"^(?:step|round)-(\d{5,})$")
ROUND_DIR = STEP_DIR  # the old name of the pattern, for code that imported it
MARKER = "meta.json"
#: The data files every checkpoint has, each with its size and SHA-256 in ``meta.json`` (streamed
#: sections add their chunk files to that list).
DATA_FILES = ("model.safetensors", "state.safetensors")
#: Checkpoints pruning always keeps (whatever ``run.keep_checkpoints`` says): a fallback for a damaged newest.
MIN_KEEP = 2
_SELF_KEY = "meta_sha256"


class CheckpointError(FedtwinError):
    """A checkpoint is damaged or incomplete (or, on resume, no checkpoint is usable)."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the step it was written after, the model, the nested extra state, ``meta.json``."""

    step: int
    model: ModelState
    extra: dict[str, Any]  # nested dicts of arrays and JSON scalars (strategy, devices, ...)
    meta: dict[str, Any]

    @property
    def round_num(self) -> int:
        """The old name of :attr:`step` (kept for code written against fedtwin 0.2)."""
        return self.step


def checkpoint_name(step: int) -> str:
    """``step-00010``."""
    return f"step-{step:05d}"


def step_of(name: str) -> int | None:
    """The step of a checkpoint folder name (``step-00010`` or ``round-00010``), None for other names."""
    match = STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def save_checkpoint(
    root: str | Path,
    step: int,
    model: Mapping[str, np.ndarray],
    extra: Mapping[str, Any],
    meta: Mapping[str, Any],
    keep: int = MIN_KEEP,
    sections: Mapping[str, Callable[[SectionWriter], None]] | None = None,
) -> Path:
    """Write ``root/step-XXXXX`` atomically, with checksums, then prune (see :func:`prune_checkpoints`).

    ``sections`` maps a name (a key ``extra`` does not have) to a callback that writes that section
    chunk by chunk (:class:`~fedtwin.orchestrator.run.checkpoint_sections.SectionWriter`); on load it is
    ``extra[name]``, a :class:`~fedtwin.orchestrator.run.checkpoint_sections.StreamedSection`.
    """
    final = Path(root) / checkpoint_name(step)
    sections = sections or {}
    clash = sorted(set(sections) & {str(k) for k in extra})
    if clash:
        raise ValueError(f"checkpoint sections {clash} are also keys of extra")
    with atomic_directory(final, overwrite=True, what="checkpoint") as tmp:
        written: dict[str, list[str]] = {}
        for name, write in sections.items():  # first: the largest part, one chunk in memory at a time
            writer = SectionWriter(tmp, name)
            write(writer)
            written[name] = writer.files
        arrays: dict[str, np.ndarray] = {}
        scalars = flatten_tree(extra, arrays)
        save_file({k: contiguous(v) for k, v in model.items()}, str(tmp / "model.safetensors"))
        save_file(arrays, str(tmp / "state.safetensors"))
        del arrays
        names = [*DATA_FILES, *(f for files in written.values() for f in files)]
        files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _file_sha256(tmp / name)} for name in names}
        body = json.loads(
            json.dumps(
                {**meta, "step": step, "scalars": scalars, "files": files, **({"sections": written} if written else {})}
            )
        )
        body[_SELF_KEY] = _meta_sha256(body)
        (tmp / MARKER).write_text(json.dumps(body, indent=2))
    prune_checkpoints(root, step, keep)
    return final


def prune_checkpoints(root: str | Path, step: int, keep: int) -> None:
    """After writing ``step``: keep the newest ``max(keep, 2)`` checkpoints up to it, delete the rest.

    Checkpoints after ``step`` are deleted too: they are left from before a resume that fell back to
    an older checkpoint, and the steps after it are being replayed. So is an old ``round-`` folder of
    the same step.
    """
    root = Path(root)
    if not root.is_dir():
        return
    kept = 0
    for path in sorted(_candidates(root), key=_order, reverse=True):
        n = step_of(path.name)
        stale = n is None or n > step or (n == step and path.name != checkpoint_name(step))
        if not stale and (path / MARKER).is_file() and kept < max(keep, MIN_KEEP):
            kept += 1
            continue
        shutil.rmtree(path, ignore_errors=True)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints (``meta.json`` present) under ``root``, oldest first (temp dirs are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in _candidates(root) if (p / MARKER).is_file()), key=_order)


def checkpoint_problem(path: str | Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` (one short phrase), or None when it checks out.

    Checks that ``meta.json`` is there and parses, that its own checksum matches, and that each data
    file is there with its recorded size and SHA-256. A checkpoint without recorded checksums (written
    by fedtwin 0.2 and earlier) only needs its files present.
    """
    path = Path(path)
    try:
        meta = json.loads((path / MARKER).read_text())
    except FileNotFoundError:
        return f"{MARKER} is missing (incomplete)"
    except (OSError, ValueError) as err:
        return f"{MARKER} is unreadable ({_short(err)})"
    if not isinstance(meta, dict):
        return f"{MARKER} is not a JSON object"
    recorded = meta.pop(_SELF_KEY, None)
    if recorded is not None and recorded != _meta_sha256(meta):
        return f"{MARKER} does not match its checksum (damaged)"
    files = meta.get("files")
    if files is None:  # written before checksums existed
        missing = [name for name in DATA_FILES if not (path / name).is_file()]
        return f"{missing[0]} is missing" if missing else None
    if not isinstance(files, dict):
        return f"{MARKER} has no valid file list"
    sections = meta.get("sections", {})
    if not isinstance(sections, dict) or not all(isinstance(f, list) for f in sections.values()):
        return f"{MARKER} has no valid section list"
    for name in dict.fromkeys([*DATA_FILES, *files, *(f for fs in sections.values() for f in fs)]):
        expected = files.get(name)
        file = path / name
        if not isinstance(expected, dict):
            return f"{MARKER} records no checksum for {name}"
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != expected.get("bytes"):
            short = " (cut short)" if isinstance(expected.get("bytes"), int) and size < expected["bytes"] else ""
            return f"{name} has {size} bytes, {expected.get('bytes')} were written{short}"
        if _file_sha256(file) != expected.get("sha256"):
            return f"{name} does not match its checksum (damaged)"
    return None


def load_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Load one checkpoint folder, checking its files first (see :func:`checkpoint_problem`).

    Raises:
        CheckpointError: the checkpoint is damaged, incomplete or unreadable (one line naming it and why).
    """
    path = Path(path)
    problem = checkpoint_problem(path) if verify else None
    if problem is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: {problem}")
    try:
        meta = json.loads((path / MARKER).read_text())
        model = load_file(str(path / "model.safetensors"))
        arrays = load_file(str(path / "state.safetensors"))
        extra = unflatten_tree(arrays.__getitem__, meta.pop("scalars", {}))
        for name, files in meta.pop("sections", {}).items():  # read chunk by chunk when asked
            extra[name] = StreamedSection(path, files)
        step = int(meta["step"] if "step" in meta else meta["round_num"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint: unreadable ({_short(err)})") from None
    for key in (_SELF_KEY, "files"):
        meta.pop(key, None)
    return Checkpoint(step, dict(model), extra, meta)


def checkpoint_section(path: str | Path, name: str) -> StreamedSection | None:
    """Section ``name`` of the checkpoint folder ``path`` (read from its ``meta.json``), None if it has none."""
    files = json.loads((Path(path) / MARKER).read_text()).get("sections", {}).get(name)
    return None if files is None else StreamedSection(path, files)


def latest_checkpoint(root: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint under ``root`` (checked; ``CheckpointError`` if damaged), or None."""
    found = list_checkpoints(root)
    return load_checkpoint(found[-1]) if found else None


def newest_usable_checkpoint(root: str | Path) -> tuple[Checkpoint | None, list[tuple[str, str]]]:
    """The newest checkpoint under ``root`` that loads and checks out, and the newer ones skipped.

    Returns:
        ``(checkpoint or None, [(folder name, what is wrong), ...])``, the skipped ones newest first.
        A folder without ``meta.json`` counts as skipped (a local checkpoint appears by one rename, so
        a folder without its marker was damaged afterwards); temporary folders are ignored.
    """
    root = Path(root)
    skipped: list[tuple[str, str]] = []
    if not root.is_dir():
        return None, skipped
    for path in sorted(_candidates(root), key=_order, reverse=True):
        try:
            return load_checkpoint(path), skipped
        except CheckpointError as err:
            skipped.append((path.name, str(err).split(": damaged checkpoint: ", 1)[-1]))
    return None, skipped


def describe_skipped(skipped: list[tuple[str, str]]) -> str:
    """``step-00004 (model.safetensors is missing), step-00002 (...)``."""
    return ", ".join(f"{name} ({why})" for name, why in skipped)


def _candidates(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``; for a step with both a ``step-`` and a ``round-`` folder, both."""
    return [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]


def _order(path: Path) -> tuple[int, int]:
    """Sort key: the step, then ``step-`` after ``round-`` (the newer name wins a tie)."""
    return (step_of(path.name) or 0, int(path.name.startswith("step-")))


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _meta_sha256(body: Mapping[str, Any]) -> str:
    """SHA-256 of ``meta.json``'s content in a canonical form (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _short(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]
