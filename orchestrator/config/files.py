"""Reading config files: one-line errors for files that are missing, binary, empty or not YAML, and
``base:`` inheritance between experiment files.

An experiment YAML may start from another one::

    # fedavg.yaml                       # quickstart.yaml
    name: fedavg                        base: fedavg.yaml
    federation: {num_rounds: 30}        name: quickstart
    strategy: {name: fedavg}            strategy: {name: feddu, params: {decay: 0.99}}

``base`` is a path relative to the file that names it; bases may have bases (a cycle, or a chain of more
than :data:`MAX_BASES` files, is an error). The
file's settings are deep-merged onto its base's: mappings merge key by key, everything else (numbers,
strings, lists, null) replaces. Sweep files use :func:`read_mapping` and :func:`relative_to` too; their
``base`` names the experiment the trials start from and is not merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.yaml_strict import DuplicateKeyError, TooLargeError, load_yaml

BASE_KEY = "base"
#: The longest chain of ``base:`` files (a file, its base, the base's base, ...).
MAX_BASES = 32


def read_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse the YAML mapping in ``path``.

    Args:
        path: the file (a local path, or a URI such as ``s3://bucket/runs/x/spec.yaml``).
        what: what the file is, for errors ("config file", "sweep file").

    Raises:
        ConfigError: one line naming the file when it is missing, unreadable, not UTF-8 text, not
            YAML, empty, not a mapping at the top level, or has a key twice in one mapping (naming the
            dotted key and both lines).
        StorageError: a URI whose store refuses (missing bucket, no credentials).
    """
    from fedtwin.pipelines.core import storage

    if storage.is_remote(path):
        try:
            raw = storage.read_bytes(path)
        except FileNotFoundError:
            raise ConfigError(f"{path}: {what} not found") from None
    else:
        path = Path(path)
        try:
            if path.is_dir():
                raise ConfigError(f"{path}: is a folder; give the path of a YAML {what}")
            if not path.is_file():
                raise ConfigError(f"{path}: {what} not found")
            raw = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (cannot read it as UTF-8); give a YAML {what}") from None
    try:
        data = load_yaml(text)
    except (DuplicateKeyError, TooLargeError) as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to read; flatten it") from None
    if data is None:
        raise ConfigError(f"{path}: the {what} is empty; it needs at least one setting (see configs/ for examples)")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return dict(data)


def relative_to(ref: str | Path, file: Path) -> Path:
    """``ref`` as written in ``file``: absolute paths stay, relative ones are taken from ``file``'s folder."""
    ref = Path(ref).expanduser()
    return ref if ref.is_absolute() else file.parent / ref


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, any other value replaces.

    Neither argument is changed; the result shares no mapping with them.
    """
    out = {k: deep_merge({}, v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = deep_merge({}, value) if isinstance(value, Mapping) else value
    return out


def load_with_bases(path: str | Path, relative_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Read an experiment file and the chain of ``base:`` files under it, merged (see the module docstring).

    Args:
        path: the experiment YAML.
        relative_keys: dotted keys whose values (a path or a list of paths) are relative to the file
            that sets them; they are made absolute before merging, so a base's paths stay its own.

    Raises:
        ConfigError: one line naming the file at fault (missing base, cycle, bad YAML, ...).
    """
    from fedtwin.pipelines.core import storage

    if storage.is_remote(path):  # e.g. a sweep's best.yaml in a bucket: self-contained, no base chain
        data = read_mapping(str(path))
        if BASE_KEY in data:
            raise ConfigError(f"{path}: base: is not supported in a file on object storage; download it first")
        return data
    return _load(Path(path), tuple(relative_keys), ())


def _load(path: Path, relative_keys: tuple[str, ...], chain: tuple[Path, ...]) -> dict[str, Any]:
    data = read_mapping(path)
    for dotted in relative_keys:
        _absolutize(data, dotted, path)
    if BASE_KEY not in data:
        return data
    ref = data.pop(BASE_KEY)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{path}: base: expected the path of another experiment YAML, got {ref!r}")
    if len(chain) + 1 >= MAX_BASES:
        raise ConfigError(f"{path}: base: more than {MAX_BASES} files deep; shorten the chain of base: files")
    base_path = relative_to(ref, path)
    here = path.resolve()
    seen = (*chain, here)
    if base_path.resolve() in seen:
        loop = " -> ".join(p.name for p in (*seen, base_path.resolve()))
        raise ConfigError(f"{path}: base: files inherit from each other in a cycle ({loop}); remove one base:")
    if not _is_file(base_path):
        raise ConfigError(
            f"{path}: base: experiment file {base_path} not found (paths are relative to the file that names them)"
        )
    return deep_merge(_load(base_path, relative_keys, seen), data)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False also for a path the file system refuses (too long, ...)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _absolutize(data: dict[str, Any], dotted: str, file: Path) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    if not isinstance(node, dict) or leaf not in node:
        return  # absent or malformed: the strict loader reports the latter with its dotted path
    value = node[leaf]
    if isinstance(value, str):
        node[leaf] = str(relative_to(value, file).resolve())
    elif isinstance(value, list):
        node[leaf] = [str(relative_to(v, file).resolve()) if isinstance(v, str) else v for v in value]
