"""Strict mapping of plain dicts (YAML) onto frozen dataclasses, and dotted overrides.

Every error names the dotted path of the offending key, e.g. ``federation.devices_per_rounds: unknown
key``. Types are checked against the dataclass annotations (int, float, str, bool, Literal, Optional,
tuple, dict, nested dataclasses). Range checks live in each section's ``__post_init__`` and raise
``ValueError("field: message")``; we prefix the section path here.

A section that was regrouped declares ``LEGACY_KEYS`` (old key -> new dotted keys inside the section);
:func:`from_dict` moves such old keys to their new places with a one-line warning naming the new key, so
old config files and the ``spec.yaml`` of older run folders keep loading.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union, cast, get_args, get_origin, get_type_hints

import yaml

from fedtwin.orchestrator.config.yaml_strict import DuplicateKeyError, load_yaml
from fedtwin.pipelines.core.errors import FedtwinError

logger = logging.getLogger(__name__)


#: Integer settings must fit a signed 64-bit integer (numpy, torch and Ray all hold them as one).
INT_LIMIT = 2**63


class ConfigError(FedtwinError, ValueError):
    """An experiment config is invalid; the message starts with the dotted path of the field."""


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _move_legacy_keys(cls, data, path, fields)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = closest(str(key), fields)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConfigError(f"{dotted}: unknown key{hint}; allowed: {', '.join(sorted(fields))}")
        kwargs[key] = coerce(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path + '.' if path else ''}{err}") from None


def _move_legacy_keys(cls: type, data: Mapping[str, Any], path: str, fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with the old keys of ``cls.LEGACY_KEYS`` moved to their grouped places (one warning each).

    An old key that is now a group's name (``twin.loss: mmt`` vs ``twin.loss: {kind: mmt}``) is old only
    when its value is not a mapping. The old key's value wins over the new key's, so a ``--set`` of an
    old key still changes a config file written with the new keys.
    """
    legacy: Mapping[str, tuple[str, ...]] = getattr(cls, "LEGACY_KEYS", {})
    moved = [k for k in data if k in legacy and not (k in fields and isinstance(data[k], Mapping))]
    if not moved:
        return data
    out = dict(data)
    prefix = f"{path}." if path else ""
    for old in moved:
        value = out.pop(old)
        for target in legacy[old]:
            group, _, key = target.partition(".")
            node = out.get(group)
            if node is not None and not isinstance(node, Mapping):
                raise ConfigError(f"{prefix}{group}: expected a mapping (it holds {prefix}{target}), got {node!r}")
            out[group] = {**(node or {}), key: value}
        new = " and ".join(prefix + t for t in legacy[old])
        logger.warning("%s%s is deprecated and will be removed; use %s", prefix, old, new)
    return out


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: dataclasses to plain dicts, tuples to lists (YAML-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with dotted keys (``a.b.c``) set to new values."""
    out = _deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: '{part}' is not a section and cannot hold '{parts[-1]}'")
            node = child
        node[parts[-1]] = value
    return out


def parse_set_option(text: str) -> tuple[str, Any]:
    """Parse a CLI ``--set key=value``; the value is read as YAML (numbers, bools, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set federation.num_rounds=10")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except DuplicateKeyError as err:
        raise ConfigError(f"--set {text!r}: {err}") from None
    except (yaml.YAMLError, RecursionError):
        value = raw
    return key.strip(), value


def parse_set_options(texts: Iterable[str]) -> dict[str, Any]:
    """Parse several ``KEY=VALUE`` strings (``--set a=1 b=2 --set c=3``) into dotted overrides, in order.

    A key given twice keeps its last value, like repeated ``--set`` flags always did.
    """
    return dict(parse_set_option(text) for text in texts)


def coerce(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``hint`` and convert it (nested dataclasses, tuples, floats).

    Raises:
        ConfigError: naming ``path`` when the value does not fit.
    """
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(arg, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {_name(hint)}")
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(repr(a) for a in get_args(hint))
            raise ConfigError(f"{path}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(cast(type, hint), value, path)  # a hint is a class, never a dataclass instance
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(hint)
        item = args[0] if args else Any
        return tuple(coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise ConfigError(f"{path}: {value} is out of range; an integer setting fits in 64 bits (|x| < 2**63)")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"{path}: unsupported annotation {hint!r}")  # a bug in a config class, not user input


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def closest(key: str, fields: Iterable[str]) -> str | None:
    """The allowed name most like ``key`` (for "did you mean" hints), or None."""
    import difflib

    match = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
    return match[0] if match else None


def _deepcopy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
