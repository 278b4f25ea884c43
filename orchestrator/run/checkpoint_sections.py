"""Streamed checkpoint sections: state too large to hold at once, written and read one chunk at a time.

A recipe whose checkpoint holds one entry per device (SCAFFOLD's control variates, FedDUM's device
momentum) would otherwise gather all of it into the driver and then copy it several times while
flattening and serialising. A *section* is written instead by a callback that calls
:meth:`SectionWriter.write` once per chunk (a nested mapping, the same shape as ``extra``); each chunk
becomes its own safetensors file, ``<section>-00000.safetensors``, ``<section>-00001.safetensors``, ...,
with its arrays as tensors and its JSON tree (scalars and pointers to the arrays) in the file's header
metadata. ``meta.json`` lists the files of each section and records their sizes and SHA-256 like the
other data files.

On load a section is a :class:`StreamedSection`: a read-only mapping (reading it as a whole loads every
chunk, for tests and small runs) whose :meth:`StreamedSection.chunks` yields one chunk at a time,
optionally only the entries a caller wants, so a resume or a host restore never holds more than one chunk.

The tree encoding (:func:`flatten_tree` / :func:`unflatten_tree`) is the one ``state.safetensors`` uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

#: Header-metadata key of a chunk file's JSON tree.
TREE_KEY = "tree"


def flatten_tree(tree: Mapping[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Split a nested mapping into numbered safetensors arrays and a JSON tree that points at them.

    Array keys are numbered (``a0``, ``a1``, ...) so the mapping's own keys may hold any character.
    """
    scalars: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            scalars[str(key)] = flatten_tree(value, arrays)
        elif isinstance(value, np.ndarray):
            name = f"a{len(arrays)}"
            arrays[name] = contiguous(value)
            scalars[str(key)] = {"__array__": name}
        else:
            scalars[str(key)] = value
    return scalars


def unflatten_tree(array: Callable[[str], np.ndarray], scalars: Mapping[str, Any]) -> dict[str, Any]:
    """The nested mapping :func:`flatten_tree` split; ``array(name)`` returns a stored array."""
    out: dict[str, Any] = {}
    for key, value in scalars.items():
        if isinstance(value, Mapping) and set(value) == {"__array__"}:
            out[key] = np.array(array(value["__array__"]))
        elif isinstance(value, Mapping):
            out[key] = unflatten_tree(array, value)
        else:
            out[key] = value
    return out


def contiguous(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy that keeps 0-d arrays 0-d (``np.ascontiguousarray`` makes them 1-d)."""
    return np.array(array, order="C", copy=True)


class SectionWriter:
    """Writes the chunks of one section into a checkpoint's (temporary) folder; see the module docstring."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = Path(folder)
        self.name = name
        self.files: list[str] = []

    def write(self, chunk: Mapping[str, Any]) -> None:
        """Write one chunk (a nested mapping of arrays and JSON scalars) as the section's next file."""
        arrays: dict[str, np.ndarray] = {}
        tree = flatten_tree(chunk, arrays)
        file = f"{self.name}-{len(self.files):05d}.safetensors"
        save_file(arrays, str(self.folder / file), metadata={TREE_KEY: json.dumps(tree)})
        self.files.append(file)


class StreamedSection(Mapping[str, Any]):
    """A section of a loaded checkpoint, read from its files when asked (see the module docstring).

    Args:
        folder: the checkpoint folder.
        files: the section's chunk files, in the order they were written.
    """

    def __init__(self, folder: str | Path, files: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.files = list(files)
        self._whole: dict[str, Any] | None = None

    def chunks(self, keep: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
        """Each chunk's top-level entries (those ``keep`` accepts), one chunk at a time; empty ones skipped.

        Only the arrays of the kept entries are read.
        """
        for file in self.files:
            with safe_open(str(self.folder / file), framework="numpy") as fh:
                tree = json.loads((fh.metadata() or {}).get(TREE_KEY, "{}"))
                wanted = {k: v for k, v in tree.items() if keep is None or keep(k)}
                if wanted:
                    yield unflatten_tree(fh.get_tensor, wanted)

    def _load(self) -> dict[str, Any]:
        if self._whole is None:
            whole: dict[str, Any] = {}
            for chunk in self.chunks():
                whole.update(chunk)
            self._whole = whole
        return self._whole

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"StreamedSection({str(self.folder)!r}, {len(self.files)} files)"
