"""Strict mapping of plain dicts (YAML) onto frozen dataclasses, and dotted overrides.

Every error names the dotted path of the offending key, e.g. ``federation.devices_per_rounds: unknown
key``. Types are checked against the dataclass annotations (int, float, str, bool, Literal, Optional,
tuple, dict, nested dataclasses). Range checks live in each section's ``__post_init__`` and raise
``ValueError("field: message")``; we prefix the section path here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from fedtwin.pipelines.core.errors import FedtwinError


class ConfigError(FedtwinError, ValueError):
    """An experiment config is invalid; the message starts with the dotted path of the field."""


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
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
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
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
        return from_dict(hint, value, path)
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
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
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
