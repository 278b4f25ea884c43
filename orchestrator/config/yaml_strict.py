"""YAML as fedtwin reads it: PyYAML's safe loader, but a mapping key given twice is an error.

PyYAML keeps the last of two equal keys without a word, so a file with two ``training:`` sections (or
``recipe:`` twice) runs with whatever came last. Every YAML fedtwin reads (experiment files and their
``base:`` files, sweep files, a run folder's ``spec.yaml``, ``--set`` values) goes through
:func:`load_yaml`, which composes the document, checks every mapping for repeated keys (naming the
dotted key and both lines), and only then builds the Python objects.

Keys are compared as YAML reads them, so ``1`` and ``0x1`` (both the integer 1) or ``yes`` and
``true`` are the same key. Keys brought in by a merge (``<<: *defaults``) may be overridden, as YAML
allows.
"""

from __future__ import annotations

from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"
#: The most values a document may hold once its aliases are expanded (fedtwin copies mappings when it
#: merges ``base:`` files, so a few nested aliases could otherwise ask for billions of copies).
MAX_VALUES = 1_000_000


class TooLargeError(yaml.YAMLError):
    """The document expands (through aliases) to more than :data:`MAX_VALUES` values."""


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds the same key twice; ``key`` is its dotted path, ``first``/``second`` 1-based lines."""

    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(f"key '{key}' appears twice (line {first} and line {second}); keep one of them")
        self.key, self.first, self.second = key, first, second


def load_yaml(text: str) -> Any:
    """Parse one YAML document like ``yaml.safe_load``, refusing repeated mapping keys.

    Raises:
        DuplicateKeyError: a key given twice in one mapping (a ``yaml.YAMLError``).
        yaml.YAMLError: any other YAML problem, as ``yaml.safe_load`` raises it.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_keys(loader, node)
        _check_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_keys(loader: yaml.SafeLoader, root: yaml.Node) -> None:
    """Walk the node tree (iteratively: aliases may repeat nodes, depth is unbounded) checking every mapping."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    stack.append((value_node, path))
                    continue
                key = _key_value(loader, key_node)
                dotted = f"{path}.{key}" if path else str(key)
                line = key_node.start_mark.line + 1
                if key is not None and key in lines:
                    raise DuplicateKeyError(dotted, lines[key], line)
                if key is not None:
                    lines[key] = line
                stack.append((value_node, dotted))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_size(root: yaml.Node) -> None:
    """``TooLargeError`` when the tree, with every alias expanded, holds more than ``MAX_VALUES`` nodes."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: an alias back to one of them is a cycle, counted once
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes.get(id(child), 0) for child in _children(node))
            if sizes[key] > MAX_VALUES:
                raise TooLargeError(f"the document holds more than {MAX_VALUES:,} values once its aliases are expanded")
            continue
        if key in sizes or key in open_nodes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _key_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A scalar key as YAML types it (``1`` == ``0x1``); None for keys that are not plain scalars."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    try:
        value = loader.construct_object(node)
        hash(value)
    except (yaml.YAMLError, TypeError, ValueError):
        return node.value
    return value
