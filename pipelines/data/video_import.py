"""Import real video files as a fedtwin dataset (the same Parquet + ``manifest.json`` as generated data).

:func:`import_videos` takes the videos found by :mod:`fedtwin.pipelines.data.video_sources`, decodes them with
:func:`fedtwin.pipelines.data.video_decode.decode_video` (in a process pool with ``workers`` >= 1) and streams
the clips into ``train.parquet`` and ``test.parquet`` row group by row group, so memory stays bounded
whatever the number of files: at most a few videos per worker are in flight, and each split buffers
one row group. Results are consumed in input order (sorted video ids), so the output is byte-identical
for the same input, settings and seed, whatever the number of workers.

Split: the index's ``split`` column if it has one, else a seeded per-class shuffle of the videos
holding out ``test_fraction`` of each class (at least one video per class stays in train). A video's
clips are never on both sides. The split is decided before decoding, so skipped videos can shift the
realised fraction a little.

Skipped files (unreadable, truncated, no video stream, too short with ``short_videos="skip"``, or a
decoder that crashed its worker) are listed with their reason in the manifest under ``info.skipped``.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedtwin.pipelines.core.atomic_write import atomic_directory, write_json_atomic
from fedtwin.pipelines.core.errors import DatasetError, FedtwinError
from fedtwin.pipelines.core.seeding import derive_seed, numpy_rng
from fedtwin.pipelines.data.dataset_io import PARQUET_WRITE_OPTIONS, rows_per_group
from fedtwin.pipelines.data.manifest import MANIFEST_NAME, DatasetManifest, SplitInfo, load_dataset_manifest
from fedtwin.pipelines.data.schema import ClipShape, clip_schema, clip_size
from fedtwin.pipelines.data.video_decode import (
    DecodedVideo,
    ImportConfig,
    VideoJob,
    decode_video,
    ping,
    require_av,
    video_key,
)
from fedtwin.pipelines.data.video_sources import VideoSources

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMPORTER_NAME = "video-import"
_SPLIT_STREAM = 1  # seed path (seed, _SPLIT_STREAM, class index) of the per-video split
_UNIFORM_STREAM = 2  # seed path (seed, _UNIFORM_STREAM, video key) of a video's uniform clip starts
_IN_FLIGHT_PER_WORKER = 4


@dataclass(frozen=True)
class SkippedVideo:
    """A file that gave no clips: its id (path relative to the source) and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ImportProgress:
    """Reported after every video, in input order."""

    done: int
    total: int
    clips: int
    skipped: int
    seconds: float
    skip: SkippedVideo | None = None  # set when this video was skipped


@dataclass(frozen=True)
class ImportResult:
    """The written dataset and what happened to the videos."""

    manifest: DatasetManifest
    videos: int
    imported: int
    padded: int
    skipped: tuple[SkippedVideo, ...]
    seconds: float


def assign_splits(sources: VideoSources, test_fraction: float, seed: int) -> list[str]:
    """Split of every video of ``sources`` (same order): the index's, else a seeded per-class shuffle."""
    if sources.has_split:
        return [str(v.split) for v in sources.videos]
    splits = ["train"] * len(sources.videos)
    for c, name in enumerate(sources.class_names):
        members = [i for i, v in enumerate(sources.videos) if v.label == name]
        n_test = min(int(round(test_fraction * len(members))), len(members) - 1)
        order = numpy_rng(seed, _SPLIT_STREAM, c).permutation(len(members))
        for j in order[:n_test]:
            splits[members[j]] = "test"
    return splits


class _SplitWriter:
    """Streams one split's rows into Parquet in full row groups; tracks its label histogram."""

    def __init__(self, path: Path, clip_shape: ClipShape, num_classes: int, with_group: bool) -> None:
        self.path = path
        self.schema = clip_schema(clip_shape, with_group=with_group)
        self.writer = pq.ParquetWriter(path, self.schema, **PARQUET_WRITE_OPTIONS)
        self.size = clip_size(clip_shape)
        self.group_rows = rows_per_group(clip_shape)
        self.histogram = np.zeros(num_classes, dtype=np.int64)
        self.rows = 0
        self._pixels: list[np.ndarray] = []  # (k, size) uint8 blocks, one per video (or the carried rest)
        self._columns: list[list[Any]] = [[], [], []]  # label, video_id, group of every buffered row

    def add(self, clips: np.ndarray, label: int, video_id: str, group: str | None) -> None:
        """Queue the (K, T, C, H, W) clips of one video; full row groups are written out."""
        k = len(clips)
        self._pixels.append(clips.reshape(k, self.size))
        for column, value in zip(self._columns, (label, video_id, group)):
            column.extend([value] * k)
        self.histogram[label] += k
        self.rows += k
        if len(self._columns[0]) >= self.group_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        buffered = len(self._columns[0])
        n_out = buffered if final else buffered // self.group_rows * self.group_rows
        if n_out == 0:
            return
        pixels = np.concatenate(self._pixels)
        arrays = [
            pa.FixedSizeBinaryArray.from_buffers(pa.binary(self.size), n_out, [None, pa.py_buffer(pixels[:n_out])]),
            pa.array(self._columns[0][:n_out], pa.int64()),
            pa.array(self._columns[1][:n_out], pa.string()),
            pa.array(self._columns[2][:n_out], pa.string()),
        ]
        table = pa.Table.from_arrays(arrays[: len(self.schema)], schema=self.schema)
        self.writer.write_table(table, row_group_size=self.group_rows)
        # Rows that do not fill a row group wait for the next videos (copied: the block is freed).
        self._pixels = [pixels[n_out:].copy()] if n_out < buffered else []
        self._columns = [column[n_out:] for column in self._columns]

    def close(self) -> SplitInfo:
        """Write the last rows and close the file; its manifest entry."""
        self._flush(final=True)
        self.writer.close()
        return SplitInfo(self.path.name, self.rows, tuple(int(v) for v in self.histogram))


class WorkerStartError(FedtwinError):
    """The decoding worker processes could not start (nothing to do with the videos)."""


def _pooled(
    jobs: Sequence[VideoJob], workers: int, fn: Callable[[VideoJob], DecodedVideo]
) -> Generator[DecodedVideo, None, None]:
    """``fn`` over ``jobs`` in a spawned process pool, results in input order, a bounded number in flight."""
    # spawn, not fork: the parent may hold Arrow's threads, and forking a threaded process can deadlock.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        try:
            pool.submit(ping).result()
        except BrokenProcessPool:
            # Not a bad file: the workers cannot start at all (spawn re-imports the caller's main script).
            raise WorkerStartError(
                "cannot start decoding worker processes; call from a script guarded by "
                "`if __name__ == '__main__':`, or decode in this process with workers=0 (--workers 0)"
            ) from None
        it = iter(jobs)
        window = deque(pool.submit(fn, job) for job in itertools.islice(it, workers * _IN_FLIGHT_PER_WORKER))
        while window:
            future = window.popleft()
            window.extend(pool.submit(fn, job) for job in itertools.islice(it, 1))
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _isolated(job: VideoJob, fn: Callable[[VideoJob], DecodedVideo]) -> DecodedVideo:
    """``fn(job)`` alone in a fresh process, so a file that kills its decoder is skipped, not fatal."""
    results = _pooled([job], 1, fn)
    try:
        return next(results)
    except BrokenProcessPool:
        return DecodedVideo(job.video_id, None, reason="the decoder crashed on this file (worker process died)")
    finally:
        results.close()  # shuts the one-process pool down now


def decode_all(
    jobs: Sequence[VideoJob], workers: int, fn: Callable[[VideoJob], DecodedVideo] = decode_video
) -> Iterator[DecodedVideo]:
    """Decode ``jobs`` in order: in this process (``workers`` = 0) or in a pool of ``workers`` processes.

    If a worker process dies (a decoder crash), the oldest unfinished video is retried alone (and
    skipped if it crashes again), then the pool restarts after it.
    """
    if workers == 0:
        yield from map(fn, jobs)
        return
    done = 0
    while done < len(jobs):
        try:
            for result in _pooled(jobs[done:], workers, fn):
                done += 1
                yield result
        except BrokenProcessPool:
            log.warning("a decoding worker died; retrying %s alone", jobs[done].path)
            yield _isolated(jobs[done], fn)
            done += 1


def import_videos(
    sources: VideoSources,
    out_dir: str | Path,
    cfg: ImportConfig,
    *,
    source: str = "",
    overwrite: bool = False,
    progress: Callable[[ImportProgress], None] | None = None,
    decoder: Callable[[VideoJob], DecodedVideo] = decode_video,
) -> ImportResult:
    """Decode ``sources`` into clips and write them as a dataset directory (atomically).

    Args:
        sources: the videos, sorted by id, and the class names.
        out_dir: dataset directory to create.
        cfg: clip sampling, size, split and worker settings.
        source: where the videos came from (the folder or index file), recorded in the manifest.
        overwrite: replace an existing non-empty ``out_dir``.
        progress: called after every video.
        decoder: the per-file decoder (a picklable top-level function; replaceable for tests).

    Returns:
        The manifest (``info.importer``, ``info.videos``, ``info.skipped``, and ``info.groups`` with
        an indexed ``group``) and counts.

    Raises:
        DatasetError: ``out_dir`` exists (without ``overwrite``), or no video gave a clip.
        FedtwinError: PyAV is not installed.
    """
    require_av()
    start = time.perf_counter()
    splits = assign_splits(sources, cfg.test_fraction, cfg.seed)
    threads = 1 if cfg.workers > 1 else 0  # several workers already fill the cores
    jobs = [
        VideoJob(str(v.path), v.video_id, cfg, derive_seed(cfg.seed, _UNIFORM_STREAM, video_key(v.video_id)), threads)
        for v in sources.videos
    ]
    label_of = {name: i for i, name in enumerate(sources.class_names)}
    skipped: list[SkippedVideo] = []
    padded = clips = 0
    with atomic_directory(Path(out_dir), overwrite, what="dataset directory") as tmp:
        writers = {
            s: _SplitWriter(tmp / f"{s}.parquet", cfg.clip_shape, len(label_of), sources.has_group) for s in SPLITS
        }
        try:
            for i, result in enumerate(decode_all(jobs, cfg.workers, decoder)):
                video, skip = sources.videos[i], None
                if result.clips is None:
                    skip = SkippedVideo(video.video_id, result.reason or "unknown error")
                    skipped.append(skip)
                    if progress is None:
                        log.warning("skipped %s: %s", skip.path, skip.reason)
                else:
                    writers[splits[i]].add(result.clips, label_of[video.label], video.video_id, video.group)
                    clips += len(result.clips)
                    padded += result.padded
                if progress is not None:
                    elapsed = time.perf_counter() - start
                    progress(ImportProgress(i + 1, len(jobs), clips, len(skipped), elapsed, skip))
        finally:
            entries = {s: w.close() for s, w in writers.items()}
        if clips == 0:
            first = f"; first: {skipped[0].path}: {skipped[0].reason}" if skipped else ""
            raise DatasetError(f"{source or out_dir}: no video gave a clip ({len(skipped)} skipped{first})")
        info = {
            "importer": {
                "name": IMPORTER_NAME,
                "source": source,
                "layout": sources.layout,
                "split": "index" if sources.has_split else "seeded",
                **cfg.settings(),
            },
            "videos": {
                "found": len(jobs),
                "imported": len(jobs) - len(skipped),
                "skipped": len(skipped),
                "padded": padded,
            },
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        }
        if sources.has_group:
            info["groups"] = sorted({str(v.group) for v in sources.videos})
        manifest = DatasetManifest(tmp, cfg.clip_shape, len(label_of), sources.class_names, entries, info)
        write_json_atomic(tmp / MANIFEST_NAME, manifest.to_json())
    elapsed = time.perf_counter() - start
    log.info(
        "imported %d videos into %s (%d skipped) in %.1fs", len(jobs) - len(skipped), out_dir, len(skipped), elapsed
    )
    return ImportResult(
        load_dataset_manifest(out_dir), len(jobs), len(jobs) - len(skipped), padded, tuple(skipped), elapsed
    )
