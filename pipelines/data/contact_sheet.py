"""A contact sheet of a dataset split: a few clips per class, frames left to right, one PNG.

Rows are clips, grouped by class (class name on the first row of each group); columns are the
clip's frames in order. Each frame is drawn with whole-pixel nearest-neighbour zoom, so a 32x32
frame shows its real pixels. The sheet reads the split's row groups one at a time and stops once
every class has its clips, so it is cheap on large datasets; it prefers clips of distinct videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fedtwin.pipelines.core.atomic_write import write_with
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.manifest import load_dataset_manifest
from fedtwin.pipelines.data.schema import CLIP, LABEL, VIDEO_ID, clip_size

_MIN_FRAME_PX = 64  # frames are zoomed by a whole factor to at least this many pixels
_GAP = 2  # pixels between frames and between clips (in zoomed pixels)
_CLASS_GAP = 8  # extra pixels between classes
_LABEL_PX = 140  # left margin for the class names
_TITLE_PX = 30
_DPI = 100


@dataclass(frozen=True)
class ContactSheet:
    """What was drawn: the PNG, its size in pixels and the clips shown per class."""

    path: Path
    width: int
    height: int
    clips_per_class: tuple[int, ...]


def pick_clips(
    parquet_path: Path | str, clip_shape: tuple[int, ...], num_classes: int, per_class: int
) -> list[list[np.ndarray]]:
    """Up to ``per_class`` clips (T, C, H, W) per class, first of distinct videos, in file order."""
    size = clip_size(clip_shape)
    chosen: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    spare: list[list[np.ndarray]] = [[] for _ in range(num_classes)]  # more clips of videos already shown
    seen: set[str] = set()
    for batch in pq.ParquetFile(parquet_path).iter_batches(batch_size=512, columns=[CLIP, LABEL, VIDEO_ID]):
        pixels = np.frombuffer(batch.column(CLIP).buffers()[1], np.uint8)
        offset = batch.column(CLIP).offset
        labels = batch.column(LABEL).to_numpy()
        ids = batch.column(VIDEO_ID).to_pylist()
        for i, (label, vid) in enumerate(zip(labels, ids)):
            label = int(label)
            if len(chosen[label]) >= per_class:
                continue
            clip = pixels[(offset + i) * size : (offset + i + 1) * size].reshape(clip_shape)
            if vid in seen:
                if len(spare[label]) < per_class:
                    spare[label].append(clip.copy())
            else:
                seen.add(vid)
                chosen[label].append(clip.copy())
        if all(len(c) >= per_class for c in chosen):
            break
    return [c + s[: per_class - len(c)] for c, s in zip(chosen, spare)]


def _grid(clips: list[list[np.ndarray]], zoom: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """RGB uint8 image of all clips (rows) and frames (columns); (first row's top, rows) per class."""
    t, c, h, w = next(clip for group in clips for clip in group).shape
    fh, fw = h * zoom + _GAP, w * zoom + _GAP
    rows = sum(len(g) for g in clips)
    classes_shown = sum(1 for g in clips if g)
    height = rows * fh + max(0, classes_shown - 1) * _CLASS_GAP
    image = np.full((height, t * fw, 3), 255, dtype=np.uint8)
    spans, y = [], 0
    for group in clips:
        spans.append((y, len(group)))
        for clip in group:
            frames = np.repeat(np.repeat(clip, zoom, axis=2), zoom, axis=3)  # (T, C, h*zoom, w*zoom)
            frames = np.broadcast_to(frames, (t, 3, h * zoom, w * zoom)) if c == 1 else frames
            for j in range(t):
                image[y : y + h * zoom, j * fw : j * fw + w * zoom] = frames[j].transpose(1, 2, 0)
            y += fh
        if group:
            y += _CLASS_GAP
    return image, spans


def write_contact_sheet(
    dataset_dir: str | Path, out_png: str | Path, *, split: str = "train", per_class: int = 2
) -> ContactSheet:
    """Draw ``per_class`` clips of every class of ``split`` into ``out_png`` (matplotlib, Agg).

    The PNG is ``140 + T * (W * zoom + 2)`` pixels wide, where ``zoom`` is the smallest whole factor
    making a frame at least 64 pixels; the height grows with the number of clips shown.

    Raises:
        DatasetError: not a dataset, unknown split, an empty split, or ``per_class`` < 1.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must come before pyplot is imported
    import matplotlib.pyplot as plt

    if per_class < 1:
        raise DatasetError(f"--per-class: must be >= 1, got {per_class}")
    manifest = load_dataset_manifest(dataset_dir)
    path = manifest.split_path(split)
    if manifest.splits[split].num_examples == 0:
        raise DatasetError(f"{path}: split '{split}' has no clips")
    clips = pick_clips(path, manifest.clip_shape, manifest.num_classes, per_class)
    t, _, h, w = manifest.clip_shape
    zoom = max(1, -(-_MIN_FRAME_PX // min(h, w)))
    image, spans = _grid(clips, zoom)
    width, height = _LABEL_PX + image.shape[1], _TITLE_PX + image.shape[0]
    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    try:
        ax = fig.add_axes((_LABEL_PX / width, 0.0, image.shape[1] / width, image.shape[0] / height))
        ax.imshow(image, interpolation="nearest", aspect="auto")
        fh = h * zoom + _GAP
        ticks = [(top + rows * fh / 2, name) for (top, rows), name in zip(spans, manifest.class_names) if rows]
        ax.set_yticks([y for y, _ in ticks], [name for _, name in ticks], fontsize=9)
        ax.set_xticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.tick_params(length=0)
        title = f"{Path(dataset_dir).name} / {split}: {per_class} clip(s) per class, {t} frames left to right"
        fig.text(0.5, 1 - (_TITLE_PX / 2) / height, title, ha="center", va="center", fontsize=10)
        out = Path(out_png)
        write_with(out, lambda tmp: fig.savefig(tmp, dpi=_DPI, format="png"))
    finally:
        plt.close(fig)
    return ContactSheet(out, width, height, tuple(len(g) for g in clips))
