"""Which videos to import: a folder per class, or an index file (CSV or JSONL).

Both layouts give a list of :class:`VideoSource`, sorted by ``video_id`` (the path relative to the
source folder or to the index file), so the same files always import in the same order whatever
the file system or the index's line order. Problems with the layout itself (no such folder, no
videos, an index without ``path``/``label`` columns) are one-line ``DatasetError``s; problems with
one video (missing, unreadable) are left to the decoder, which skips it.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from fedtwin.pipelines.core.errors import DatasetError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
INDEX_COLUMNS = ("path", "label")
OPTIONAL_INDEX_COLUMNS = ("split", "group")
INDEX_SPLITS = ("train", "test")


@dataclass(frozen=True)
class VideoSource:
    """One video to import.

    Attributes:
        path: the file.
        video_id: its path relative to the source folder (or the index file's folder), POSIX style;
            every clip cut from it carries this id.
        label: class name.
        split: ``"train"``/``"test"`` from the index, or None (split decided by the importer).
        group: camera or owner from the index, or None.
    """

    path: Path
    video_id: str
    label: str
    split: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class VideoSources:
    """The videos of one import, their class names (index = label) and where they came from."""

    videos: tuple[VideoSource, ...]
    class_names: tuple[str, ...]
    layout: str  # "folders" or "index"
    has_split: bool = False
    has_group: bool = False


def natural_key(name: str) -> tuple[int, int | str]:
    """Sort key putting integer names in numeric order ("2" before "10") before other names."""
    return (0, int(name)) if re.fullmatch(r"\d+", name) else (1, name)


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def discover_folders(src: str | Path) -> VideoSources:
    """Videos laid out as ``SRC/<label>/...``: every class folder is searched recursively.

    Files with other extensions and hidden files are ignored; files directly in ``SRC`` too.

    Raises:
        DatasetError: ``src`` is missing or not a folder, has no class folders, or no videos.
    """
    root = Path(src)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; give a folder with one subfolder of videos per class")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give a folder of class folders, or an index with --index")
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: natural_key(d.name)
    )
    if not class_dirs:
        raise DatasetError(f"{root}: no class folders; put videos in {root}/<label>/ or pass --index FILE")
    videos, names = [], []
    for d in class_dirs:
        files = [p for p in d.rglob("*") if _is_video(p)]
        if files:
            names.append(d.name)
            videos += [VideoSource(p, p.relative_to(root).as_posix(), d.name) for p in files]
    if not videos:
        exts = "|".join(e[1:] for e in VIDEO_EXTENSIONS)
        raise DatasetError(f"{root}: no video files ({exts}) in its class folders")
    return VideoSources(tuple(sorted(videos, key=lambda v: v.video_id)), tuple(names), "folders")


def _index_rows(index: Path) -> list[tuple[int, dict[str, object]]]:
    """(line number, row) of a CSV or JSONL index; JSONL if the suffix says so or the file starts with '{'."""
    try:
        text = index.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{index}: index file not found; check --index") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{index}: unreadable index ({err})") from None
    if index.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{index}:{n}: not a JSON object per line ({err.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{index}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append((n, row))
        return rows
    reader = csv.DictReader(text.splitlines())
    # DictReader's line_num counts physical lines read so far: the row's last line.
    return [(reader.line_num, dict(row)) for row in reader]


def read_index(index_file: str | Path, base: str | Path | None = None) -> VideoSources:
    """Videos listed in an index with columns ``path``, ``label`` and optional ``split``, ``group``.

    Paths are relative to ``base`` if given, else to the index file's folder (absolute paths are
    kept). A listed file that does not exist is not an error here: the importer skips it and lists
    it in the manifest.

    Raises:
        DatasetError: unreadable index, missing columns, empty values, unknown split, duplicate path.
    """
    index = Path(index_file)
    rows = _index_rows(index)
    if not rows:
        raise DatasetError(f"{index}: index lists no videos")
    columns = set().union(*(row.keys() for _, row in rows))
    missing = [c for c in INDEX_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(
            f"{index}: index has no column {', '.join(repr(c) for c in missing)} "
            f"(needs {', '.join(INDEX_COLUMNS)}; optional {', '.join(OPTIONAL_INDEX_COLUMNS)})"
        )
    has_split, has_group = "split" in columns, "group" in columns
    if base is not None and not Path(base).is_dir():
        raise DatasetError(f"{base}: no such folder (the folder the index's paths are relative to)")
    root = Path(base) if base is not None else index.parent
    seen: dict[str, int] = {}
    videos = []
    for n, row in rows:
        values = {k: "" if row.get(k) is None else str(row.get(k)).strip() for k in (*INDEX_COLUMNS, "split", "group")}
        for key in ("path", "label", *(["split"] if has_split else []), *(["group"] if has_group else [])):
            if not values[key]:
                raise DatasetError(f"{index}:{n}: empty '{key}'")
        if has_split and values["split"] not in INDEX_SPLITS:
            raise DatasetError(f"{index}:{n}: split must be one of {', '.join(INDEX_SPLITS)}, got {values['split']!r}")
        path = root / values["path"]
        video_id = posixpath.normpath(Path(values["path"]).as_posix())  # "a/./b" and "a/b" are one video
        if video_id in seen:
            raise DatasetError(f"{index}:{n}: {video_id} is listed twice (also line {seen[video_id]})")
        seen[video_id] = n
        videos.append(VideoSource(path, video_id, values["label"], values["split"] or None, values["group"] or None))
    names = tuple(sorted({v.label for v in videos}, key=natural_key))
    return VideoSources(tuple(sorted(videos, key=lambda v: v.video_id)), names, "index", has_split, has_group)
