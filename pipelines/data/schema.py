"""Column names and the Arrow schema of clip tables: the only module that spells them out.

A clip table has one row per video clip:

- ``clip``: the clip's uint8 pixels (0-255) in C order of shape (T, C, H, W), stored as one
  ``fixed_size_binary(T*C*H*W)`` value. Measured on 20,000 clips of 8x1x32x32 (pyarrow 26, 2 cores),
  reading this back is 10-20x faster than ``fixed_size_list<uint8>`` or ``list<uint8>``: Parquet
  stores a binary value as one blob, whereas a list column carries a repetition level per pixel.
  The shape lives in ``manifest.json`` and in the schema metadata.
- ``label``: int64 class index.
- ``video_id``: string naming the source video. Generated datasets give every clip its own id;
  imported videos give all clips cut from one video the same id (its path), so a split or a
  partition can keep them together.
- ``group`` (optional): string naming where a video comes from (a camera, an owner), written by
  ``fedtwin data import-videos`` when its index has a ``group`` column. Readers that do not need it
  never read it, so datasets with and without it load the same way.
- ``frame_index`` (optional): for clips made of selected frames (key-frame memories), the original
  frame index of each stored frame, as ``list<int16>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

CLIP = "clip"
LABEL = "label"
VIDEO_ID = "video_id"
FRAME_INDEX = "frame_index"
GROUP = "group"

SCHEMA_VERSION = 1
CLIP_DTYPE = "uint8"

REQUIRED_COLUMNS = (CLIP, LABEL, VIDEO_ID)

# Schema metadata keys (bytes, as Arrow stores them).
META_SCHEMA_VERSION = b"fedtwin.schema_version"
META_CLIP_SHAPE = b"fedtwin.clip_shape"

ClipShape = tuple[int, int, int, int]


def clip_size(clip_shape: Sequence[int]) -> int:
    """Number of uint8 values in one clip of shape (T, C, H, W)."""
    size = 1
    for dim in clip_shape:
        size *= int(dim)
    return size


def check_clip_shape(clip_shape: Sequence[int]) -> ClipShape:
    """Return ``clip_shape`` as a 4-tuple of positive ints, or raise ``ValueError``."""
    shape = tuple(int(d) for d in clip_shape)
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise ValueError(f"clip shape must be 4 positive ints (T, C, H, W), got {list(clip_shape)}")
    return (shape[0], shape[1], shape[2], shape[3])


def clip_schema(clip_shape: Sequence[int], with_frame_index: bool = False, with_group: bool = False) -> pa.Schema:
    """Arrow schema of a clip table whose clips have shape ``clip_shape`` = (T, C, H, W).

    Args:
        clip_shape: (T, C, H, W) of every clip in the table.
        with_frame_index: add the optional ``frame_index`` column.
        with_group: add the optional ``group`` column (after ``video_id``).

    Returns:
        The schema, with the schema version and clip shape in its metadata.
    """
    shape = check_clip_shape(clip_shape)
    fields = [
        pa.field(CLIP, pa.binary(clip_size(shape)), nullable=False),
        pa.field(LABEL, pa.int64(), nullable=False),
        pa.field(VIDEO_ID, pa.string(), nullable=False),
    ]
    if with_group:
        fields.append(pa.field(GROUP, pa.string(), nullable=False))
    if with_frame_index:
        fields.append(pa.field(FRAME_INDEX, pa.list_(pa.int16()), nullable=False))
    metadata = {
        META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
        META_CLIP_SHAPE: json.dumps(list(shape)).encode(),
    }
    return pa.schema(fields, metadata=metadata)
