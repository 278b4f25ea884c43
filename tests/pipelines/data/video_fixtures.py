"""Small synthetic videos encoded with PyAV, shared by the video import tests.

Frames are a smooth colour gradient with a bright square moving right one pixel per frame and a
dark square moving down, so codecs keep them well (high PSNR) and every frame differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

# (suffix, codec, pixel format, extra encoder options) for every container the tests cover.
CODECS = {
    "mp4": ("libx264", "yuv420p", {"crf": "18"}),
    "webm": ("libvpx-vp9", "yuv420p", {"crf": "20", "b": "0"}),
    "avi": ("mjpeg", "yuvj420p", {"b": "4M"}),
    "mkv": ("libx264", "yuv420p", {"crf": "18"}),
    "mov": ("mpeg4", "yuv420p", {"b": "4M"}),
}


def synthetic_frames(n: int, height: int = 48, width: int = 48, phase: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB frames of a gradient with two moving squares."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([60 + 100 * x / width, 60 + 100 * y / height, 120 + 0 * x], axis=-1)
    frames = np.repeat(base[None], n, axis=0)
    for i in range(n):
        left = (i + phase) % (width - 10)
        frames[i, 8:18, left : left + 10] = (240, 230, 200)
        top = (2 * i + phase) % (height - 8)
        frames[i, top : top + 8, 30:38] = (20, 30, 60)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def encode(
    path: Path,
    frames: np.ndarray,
    rate: int = 12,
    *,
    pts_ms: Sequence[int] | None = None,
    rotation: int | None = None,
    faststart: bool = False,
) -> Path:
    """Encode RGB ``frames`` into ``path``; the codec follows the suffix (see ``CODECS``).

    ``pts_ms`` gives every frame's timestamp in milliseconds (a variable frame rate).
    """
    import av

    codec, pix_fmt, options = CODECS[path.suffix[1:]]
    path.parent.mkdir(parents=True, exist_ok=True)
    container_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=rate, options=dict(options))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def truncate(path: Path, fraction: float) -> Path:
    """Cut ``path`` to ``fraction`` of its bytes (a broken download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, in dB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB uint8 frames (what a grey import should give)."""
    return np.clip(np.rint(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])), 0, 255).astype(np.uint8)


def crashing_decoder(job):  # noqa: ANN001, ANN201 (a VideoJob -> DecodedVideo)
    """A decoder whose process dies on ``*r2.webm`` (like a crash inside FFmpeg).

    It lives here, not in a test module, so worker processes import it without pytest or torch.
    """
    import os

    from fedtwin.pipelines.data.video_decode import decode_video

    if job.video_id.endswith("r2.webm"):
        os._exit(3)
    return decode_video(job)
