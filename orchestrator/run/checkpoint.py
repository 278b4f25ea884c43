"""Checkpoints: weights, strategy state and device-local state, written atomically.

Layout of ``checkpoints/round-00010/``: ``model.safetensors`` (the global state), ``state.safetensors``
(strategy and device arrays, flattened keys) and ``meta.json`` (round, scalars, dataset hash). Loading
uses safetensors only, never pickle. Sampling and device seeds derive from ``(seed, round, device)``,
so no RNG stream needs saving: resuming from round r replays rounds r+1.. exactly.

Locally a checkpoint is written into a temporary folder and renamed into place. Object stores have no
rename: :meth:`fedtwin.orchestrator.run.run_folder.RunFolder.publish_checkpoint` uploads the files and then
``meta.json``, the marker :func:`list_checkpoints` (and its remote twin) require, so a reader never
takes a half-uploaded checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fedtwin.pipelines.core.atomic_write import atomic_directory
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.model.state import ModelState

#: Checkpoint folder names: ``round-00010``.
ROUND_DIR = re.compile(r"^round-(\d{5,})$")
_ROUND_DIR = ROUND_DIR


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint."""

    round_num: int
    model: ModelState
    extra: dict[str, Any]  # nested dicts of arrays and JSON scalars (strategy, devices, ...)
    meta: dict[str, Any]


def save_checkpoint(
    root: str | Path,
    round_num: int,
    model: Mapping[str, np.ndarray],
    extra: Mapping[str, Any],
    meta: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``root/round-XXXXX`` atomically and prune all but the newest ``keep`` checkpoints."""
    final = Path(root) / f"round-{round_num:05d}"
    arrays: dict[str, np.ndarray] = {}
    scalars = _flatten(extra, "", arrays)
    with atomic_directory(final, overwrite=True, what="checkpoint") as tmp:
        save_file({k: _contiguous(v) for k, v in model.items()}, str(tmp / "model.safetensors"))
        save_file(arrays, str(tmp / "state.safetensors"))
        (tmp / "meta.json").write_text(json.dumps({**meta, "round_num": round_num, "scalars": scalars}, indent=2))
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temp dirs are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _ROUND_DIR.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(_ROUND_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load one checkpoint directory."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        model = load_file(str(path / "model.safetensors"))
        arrays = load_file(str(path / "state.safetensors"))
    except (OSError, ValueError) as err:
        raise FedtwinError(f"{path}: unreadable checkpoint ({err}); delete it to fall back to an older one") from None
    extra = _unflatten(arrays, meta.pop("scalars", {}))
    return Checkpoint(int(meta["round_num"]), dict(model), extra, meta)


def latest_checkpoint(root: str | Path) -> Checkpoint | None:
    """The newest checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return load_checkpoint(found[-1]) if found else None


def _flatten(tree: Mapping[str, Any], prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Split a nested mapping into numbered safetensors arrays and a JSON tree that points at them.

    Array keys are numbered (``a0``, ``a1``, ...) so the mapping's own keys may hold any character.
    """
    scalars: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            scalars[str(key)] = _flatten(value, prefix, arrays)
        elif isinstance(value, np.ndarray):
            name = f"a{len(arrays)}"
            arrays[name] = _contiguous(value)
            scalars[str(key)] = {"__array__": name}
        else:
            scalars[str(key)] = value
    return scalars


def _unflatten(arrays: Mapping[str, np.ndarray], scalars: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in scalars.items():
        if isinstance(value, Mapping) and set(value) == {"__array__"}:
            out[key] = np.array(arrays[value["__array__"]])
        elif isinstance(value, Mapping):
            out[key] = _unflatten(arrays, value)
        else:
            out[key] = value
    return out


def _contiguous(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy that keeps 0-d arrays 0-d (``np.ascontiguousarray`` makes them 1-d)."""
    return np.array(array, order="C", copy=True)
