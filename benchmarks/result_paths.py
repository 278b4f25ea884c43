"""Paths as the studies' JSON files record them: relative to the repository, or a run's name.

A study runs in a scratch folder (``/tmp/...``); its results must read the same on any machine. A path
inside the repository is stored relative to it; any other path (a run folder, a generated dataset, a
scratch folder) is stored as its last component, the run or dataset name. Scripts import this module
as ``benchmarks.result_paths`` with the repository root on ``sys.path``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: An absolute POSIX path inside a longer text (a log line): a slash-led run of non-space characters.
_ABSOLUTE_IN_TEXT = re.compile(r"(?<![\w.~:/-])/[^\s'\"|,;]+")


def portable(path: str | Path | None) -> str | None:
    """``path`` relative to the repository when inside it, else its last component; ``None`` stays."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return p.name


def portable_text(text: str) -> str:
    """``text`` with every absolute path in it replaced by :func:`portable` of it."""
    return _ABSOLUTE_IN_TEXT.sub(lambda m: portable(m.group(0)) or "", text)
