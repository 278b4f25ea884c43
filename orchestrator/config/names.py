"""Names and paths a user types that become folder names: checked against the file system's limits
before anything is written.

A run folder is ``<run.output_dir>/<name>-<YYYYmmdd-HHMMSS>`` (``-N`` appended when that exists); a
sweep folder is ``<output_dir>/<sweep name>``. A file name on Linux, macOS and the object stores'
usual limits is at most 255 bytes, so the name (in UTF-8, with what fedtwin appends) must fit; it must
not hold ``/`` or NUL, and is kept to characters every file system and shell handles: no control
characters, none of ``\\ : * ? " < > |``, not ``.`` or ``..``, not starting with ``.`` or ``-``, no
space at either end.
"""

from __future__ import annotations

#: The longest file name (one path component) common file systems take, in bytes.
NAME_MAX = 255
#: The longest path Linux takes, in bytes.
PATH_MAX = 4096
#: What a run folder adds to the run name: ``-YYYYmmdd-HHMMSS`` and, when that exists, ``-N`` (up to 9999).
RUN_SUFFIX_BYTES = len("-20261207-130000") + len("-9999")
_FORBIDDEN = set('/\\:*?"<>|')


def name_problem(name: object, suffix_bytes: int = 0) -> str | None:
    """What keeps ``name`` (with ``suffix_bytes`` appended) from being a folder name, or None."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if name in (".", ".."):
        return f"'{name}' is not a folder name"
    bad = sorted({c for c in name if c in _FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"must not contain {shown} (use letters, digits, '-', '_', '.')"
    if name[0] in ".-":
        return f"must not start with '{name[0]}'"
    if name != name.strip():
        return "must not start or end with a space"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    limit = NAME_MAX - suffix_bytes
    if size > limit:
        extra = f" (fedtwin appends {suffix_bytes} more for the folder)" if suffix_bytes else ""
        return f"is {size} bytes long; at most {limit} fit in a folder name{extra}"
    return None


def check_run_name(name: object, field: str = "name") -> None:
    """``ValueError("name: ...")`` unless ``name`` makes a valid run folder name with its timestamp."""
    problem = name_problem(name, RUN_SUFFIX_BYTES)
    if problem is not None:
        raise ValueError(f"{field}: {problem}, got {_shown(name)}")


def check_folder_name(name: object, field: str = "name") -> None:
    """``ValueError("name: ...")`` unless ``name`` is a valid folder name as it is (a sweep's)."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"{field}: {problem}, got {_shown(name)}")


def path_problem(path: str) -> str | None:
    """What keeps the local path ``path`` from being usable (NUL, a component or the whole too long)."""
    if "\x00" in path:
        return "holds a NUL character"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    if len(encoded) > PATH_MAX - NAME_MAX:
        return f"is {len(encoded)} bytes long; keep it under {PATH_MAX - NAME_MAX} so run folders fit beneath it"
    longest = max(path.split("/"), key=lambda part: len(part.encode("utf-8")))
    if len(longest.encode("utf-8")) > NAME_MAX:
        return f"has a component of {len(longest.encode('utf-8'))} bytes; at most {NAME_MAX} fit"
    return None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(text)} characters)"


def check_location(location: str | None, field: str) -> None:
    """``ValueError("field: ...")`` for an empty location or a local path the file system cannot take.

    URIs (``s3://``...) are left to :mod:`fedtwin.pipelines.core.storage`; None (unset) passes.
    """
    if location is None:
        return
    if not location.strip():
        raise ValueError(f"{field}: must name a folder, got {location!r}")
    if "://" in location and not location.startswith("file://"):
        return
    problem = path_problem(location.removeprefix("file://"))
    if problem is not None:
        raise ValueError(f"{field}: the path {problem}, got {_shown(location)}")
