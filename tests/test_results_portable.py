"""The studies' JSON results stand alone: no absolute path of the machine that produced them."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "docs" / "results").glob("*.json"))
#: A POSIX absolute path (not the path part of a URL) or a Windows drive path, anywhere in a string.
ABSOLUTE = re.compile(r"(?:^|[\s=(\"'])(?:/[\w.-]+/|[A-Za-z]:\\)")


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def test_there_are_results_to_check() -> None:
    assert RESULTS, "docs/results/*.json: none found"


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_no_absolute_paths(path: Path) -> None:
    found = [f"{where}={text!r}" for where, text in _strings(json.loads(path.read_text()), path.name)]
    bad = [entry for entry in found if ABSOLUTE.search(entry.split("=", 1)[1])]
    assert not bad, f"{path.name}: absolute paths {bad[:3]}"


def test_portable_paths() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.result_paths import portable, portable_text

    assert portable("/tmp/study/runs/mutual-s0-20260101-000000") == "mutual-s0-20260101-000000"
    assert portable(ROOT / "docs" / "results" / "mutual.json") == "docs/results/mutual.json"
    assert portable("configs/mutual.yaml") == "configs/mutual.yaml"
    assert portable(None) is None
    line = "done: /tmp/x/run-1 | see https://docs.ray.io/en/a.html"
    assert portable_text(line) == "done: run-1 | see https://docs.ray.io/en/a.html"
    assert ABSOLUTE.search("done: /tmp/x/run-1") and not ABSOLUTE.search(portable_text(line))
