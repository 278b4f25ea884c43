"""Decoding one video file into fixed-shape uint8 clips, with PyAV (FFmpeg), for ``import-videos``.

One call of :func:`decode_video` reads one file in two passes:

1. Demux only (no decoding): count the frames and read their timestamps. A file FFmpeg cannot
   open, without a video stream, or holding fewer frames than its header declares (a truncated
   download) is skipped here, with the reason.
2. Decode up to the last frame the clips need, converting only those frames: each is resized with
   FFmpeg's area filter so it covers ``size`` (the shorter side fits), centre-cropped, turned
   upright if the container says the video is rotated, and kept as grey or RGB uint8.

Memory per video is the needed frames at the output size, whatever the file's length.

Clip positions (:func:`plan_clips`) are frame indices in presentation order, or, with ``fps``, in
the video resampled to a constant rate by timestamp, which makes clips of variable-frame-rate
videos span equal times. A video shorter than one clip is padded by repeating its last frame
(``short_videos="pad"``, one clip) or skipped (``"skip"``).

Errors never escape: every problem with a file becomes ``DecodedVideo.reason``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

# Only light imports: worker processes import this module, and must start fast (no torch, no Arrow).
from fedtwin.pipelines.core.errors import FedtwinError

SAMPLINGS = ("even", "uniform")
SHORT_POLICIES = ("pad", "skip")
AV_HINT = "pip install 'fedtwin[video]'"
_DURATION_SLACK = 0.9  # a file covering less than this share of its declared duration is truncated


@dataclass(frozen=True)
class ImportConfig:
    """How videos become clips. Errors read ``"field: problem"`` (the CLI maps fields to options).

    Attributes:
        frames: frames per clip (T).
        stride: take every ``stride``-th frame within a clip.
        clips_per_video: clips cut from each video (K) at most.
        sampling: ``even`` (K evenly spaced starts: the centres of K equal segments) or ``uniform``
            (K distinct random starts, seeded by ``seed`` and the video's id).
        size: (H, W) of the output frames.
        channels: 1 (grey) or 3 (RGB).
        fps: resample every video to this constant frame rate by timestamp first (None: use the
            frames as stored).
        short_videos: ``pad`` or ``skip`` videos shorter than one clip.
        seed: the uniform starts and the train/test split derive from it.
        test_fraction: share of each class's videos held out for ``test`` (without an index split).
        workers: decoding processes; 0 decodes in the calling process. Does not change the output.
    """

    frames: int = 8
    stride: int = 1
    clips_per_video: int = 1
    sampling: str = "even"
    size: tuple[int, int] = (32, 32)
    channels: int = 1
    fps: float | None = None
    short_videos: str = "pad"
    seed: int = 0
    test_fraction: float = 0.2
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("frames", "stride", "clips_per_video"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling: must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size: must be two positive ints (H, W), got {list(self.size)}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels: must be 1 or 3, got {self.channels}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps: must be > 0, got {self.fps}")
        if self.short_videos not in SHORT_POLICIES:
            raise ValueError(f"short_videos: must be one of {', '.join(SHORT_POLICIES)}, got {self.short_videos!r}")
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction: must be in [0, 1), got {self.test_fraction}")
        if self.workers < 0:
            raise ValueError(f"workers: must be >= 0, got {self.workers}")

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(T, C, H, W) of the clips."""
        return (self.frames, self.channels, self.size[0], self.size[1])

    @property
    def span(self) -> int:
        """Frames one clip covers, first to last."""
        return (self.frames - 1) * self.stride + 1

    def settings(self) -> dict[str, Any]:
        """What the manifest records: everything that shapes the output (not ``workers``)."""
        return {
            "frames": self.frames,
            "stride": self.stride,
            "clips_per_video": self.clips_per_video,
            "sampling": self.sampling,
            "size": list(self.size),
            "channels": self.channels,
            "fps": self.fps,
            "short_videos": self.short_videos,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
        }


def parse_size(text: str) -> tuple[int, int]:
    """``"32"`` or ``"48x64"`` (H x W) -> (H, W); ``ValueError("size: ...")`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(f"size: expected HxW such as 32x32 or 48x64 (or one number for a square), got {text!r}")
    h = int(m.group(1))
    return (h, int(m.group(2)) if m.group(2) is not None else h)


def require_av() -> Any:
    """The ``av`` module, or a one-line ``FedtwinError`` naming the extra that installs it."""
    try:
        import av
    except ImportError:
        raise FedtwinError(f"importing videos needs PyAV (the 'av' package); install it with: {AV_HINT}") from None
    return av


def ping() -> bool:
    """A no-op task: checks that worker processes start."""
    return True


class SkipVideo(Exception):
    """This file cannot give clips; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class VideoJob:
    """One file to decode (picklable: sent to worker processes)."""

    path: str
    video_id: str
    cfg: ImportConfig
    sample_seed: int = 0  # seeds the uniform clip starts of this video (see plan_clips)
    threads: int = 0  # FFmpeg decoding threads; 0 lets FFmpeg choose


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """The clips of one video, or why it was skipped.

    Attributes:
        video_id: the job's id.
        clips: uint8 (K, T, C, H, W), or None when skipped.
        num_frames: frames found in the file.
        padded: the video was shorter than one clip and padded.
        reason: why it was skipped, or None.
    """

    video_id: str
    clips: np.ndarray | None
    num_frames: int = 0
    padded: bool = False
    reason: str | None = None


def video_key(video_id: str) -> int:
    """A stable 32-bit integer for a video id (Python's ``hash`` changes between processes)."""
    return int.from_bytes(hashlib.sha256(video_id.encode("utf-8")).digest()[:4], "big")


def plan_clips(length: int, cfg: ImportConfig, sample_seed: int = 0) -> tuple[np.ndarray, bool]:
    """Positions of every clip's frames in a sequence of ``length`` frames.

    ``sample_seed`` seeds the ``uniform`` starts; the importer derives it from the import seed and
    :func:`video_key`, so a video keeps its clips when other videos are added or removed.

    Returns:
        ``(K', T)`` int64 positions (K' <= K: starts that coincide are kept once) and whether the
        one clip of a short video was padded by repeating its last frame.

    Raises:
        SkipVideo: no frames, or shorter than one clip with ``short_videos="skip"``.
    """
    steps = np.arange(cfg.frames, dtype=np.int64) * cfg.stride
    if length < 1:
        raise SkipVideo("no decodable frames")
    if length < cfg.span:
        if cfg.short_videos == "skip":
            raise SkipVideo(f"too short: {length} frames, a clip spans {cfg.span}")
        return np.minimum(steps, (length - 1) // cfg.stride * cfg.stride)[None, :], True
    room = length - cfg.span  # the last possible start
    k = cfg.clips_per_video
    if cfg.sampling == "even":
        # centres of k equal segments of the room + 1 possible starts (always <= room)
        starts = np.unique((room + 1) * (2 * np.arange(k, dtype=np.int64) + 1) // (2 * k))
    else:
        rng = np.random.default_rng(sample_seed)
        starts = np.sort(rng.choice(room + 1, size=min(k, room + 1), replace=False)).astype(np.int64)
    return starts[:, None] + steps[None, :], False


def resample_positions(times: np.ndarray, fps: float) -> np.ndarray:
    """Frame shown at each tick of a constant ``fps`` clock: for every tick, the latest frame started by then."""
    t = times - times[0]
    ticks = np.arange(int(np.floor(t[-1] * fps + 1e-9)) + 1) / fps
    return np.searchsorted(t, ticks + 1e-9, side="right") - 1


def _reason(err: BaseException) -> str:
    """One short line for an exception: FFmpeg's message plus its last log line, without the path."""
    av_error = type(err).__module__.startswith("av")
    text = str(getattr(err, "strerror", None) or err) if av_error else f"{type(err).__name__}: {err}"
    log = re.search(r"last error log: (.*)$", str(err))
    if log:
        text += f" ({log.group(1).strip()})"
    return " ".join(text.split())[:300]


def decode_video(job: VideoJob) -> DecodedVideo:
    """Decode one file into clips; never raises for a bad file (see ``DecodedVideo.reason``)."""
    try:
        return _decode(job)
    except SkipVideo as skip:
        return DecodedVideo(job.video_id, None, reason=str(skip))
    except FileNotFoundError:
        return DecodedVideo(job.video_id, None, reason="file not found")
    except Exception as err:  # one bad file must not stop an import of thousands
        return DecodedVideo(job.video_id, None, reason=_reason(err))


def _decode(job: VideoJob) -> DecodedVideo:
    cfg = job.cfg
    times = _probe(job.path)
    n = len(times)
    seq = resample_positions(times, cfg.fps) if cfg.fps else np.arange(n)
    for _ in range(2):  # a second round only if the decoder gave fewer frames than the demuxer promised
        positions, padded = plan_clips(len(seq), cfg, job.sample_seed)
        frame_ids = seq[positions]
        frames, decoded = _decode_frames(job.path, np.unique(frame_ids), cfg, job.threads)
        if len(frames) == len(np.unique(frame_ids)):
            clips = np.stack([frames[int(i)] for i in frame_ids.ravel()])
            h, w = cfg.size
            clips = clips.reshape(len(positions), cfg.frames, h, w, cfg.channels).transpose(0, 1, 4, 2, 3)
            return DecodedVideo(job.video_id, np.ascontiguousarray(clips), n, padded)
        seq = seq[seq < decoded]
    raise SkipVideo(f"decoder gave {decoded} of {n} frames")


def _open(path: str) -> Any:
    av = require_av()
    try:
        container = av.open(path, metadata_errors="ignore")
    except FileNotFoundError:
        raise SkipVideo("file not found") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise SkipVideo(f"cannot open: {_reason(err)}") from None
    if not container.streams.video:
        container.close()
        raise SkipVideo("no video stream")
    return container


def _probe(path: str) -> np.ndarray:
    """Presentation times (s, sorted) of the frames of the first video stream, from demuxing alone.

    Raises:
        SkipVideo: the file holds fewer frames than its header declares, or covers too little of
            its declared duration (a truncated file).
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        pts, packets = [], 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None:
                    continue  # the demuxer's end-of-stream marker
                packets += 1
                if packet.size:
                    pts.append(packet.pts)
        except Exception as err:
            raise SkipVideo(f"unreadable after {packets} frames: {_reason(err)}") from None
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        if not pts:
            raise SkipVideo("no video frames (empty or truncated file)")
        if stream.frames and packets < stream.frames:
            raise SkipVideo(f"truncated: {packets} of {stream.frames} frames")
        if any(p is None for p in pts) or stream.time_base is None:
            times = np.arange(len(pts)) / rate
        else:
            times = np.sort(np.asarray(pts, dtype=np.float64)) * float(stream.time_base)
        declared = None
        if stream.duration and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration and len(container.streams) == 1:
            declared = container.duration / 1e6  # the file's duration is the video's only if it has no audio
        covered = times[-1] - times[0] + 1.0 / rate
        if not stream.frames and declared and covered < _DURATION_SLACK * declared:
            raise SkipVideo(f"truncated: frames cover {covered:.2f} s of {declared:.2f} s")
        return times


def _decode_frames(path: str, wanted: np.ndarray, cfg: ImportConfig, threads: int) -> tuple[dict[int, np.ndarray], int]:
    """The ``wanted`` frames (presentation order indices, sorted) converted, and how many frames were decoded."""
    want = set(wanted.tolist())
    last = int(wanted[-1])
    out: dict[int, np.ndarray] = {}
    count = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        if threads != 1:
            stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                count = i + 1
                if i in want:
                    out[i] = convert_frame(frame, cfg.size, cfg.channels)
                if i >= last:
                    break
        except Exception as err:
            raise SkipVideo(f"decoding failed after {count} frames: {_reason(err)}") from None
    return out, count


def convert_frame(frame: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    """An ``av.VideoFrame`` as uint8 (H, W, C): upright, scaled to cover ``size``, centre-cropped."""
    h_out, w_out = size
    turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise quarter turns to display
    w, h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)  # as displayed
    scale = max(h_out / h, w_out / w)
    sw, sh = max(w_out, round(w * scale)), max(h_out, round(h * scale))
    if turns % 2:
        sw, sh = sh, sw
    fmt = "gray" if channels == 1 else "rgb24"
    img = frame.reformat(width=sw, height=sh, format=fmt, interpolation="AREA").to_ndarray()
    if turns:
        img = np.rot90(img, turns)
    top, left = (img.shape[0] - h_out) // 2, (img.shape[1] - w_out) // 2
    img = img[top : top + h_out, left : left + w_out]
    return np.ascontiguousarray(img.reshape(h_out, w_out, channels))
