"""Benchmark: decode N short generated videos into a dataset with ``import_videos``; videos/s and peak memory.

Usage: python benchmarks/bench_import.py [--videos 1000] [--seconds 2] [--size 64] [--workers N]
       [--containers mp4,webm,avi] [--out-dir docs/results]

Generation (PyAV, one process) is timed separately from the import. Peak memory is
``resource.getrusage`` max RSS of this process (which also holds the generator and the Parquet
writer) and of its children (the decoding workers). On Linux a child's getrusage peak includes
the parent's peak at the time it was started (exec keeps the larger value), so the workers also
report their own peak (``VmHWM`` in /proc/self/status), which is the number to read for them.
Writes ``<out-dir>/import.md`` and ``<out-dir>/import.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

# Heavy imports (fedtwin, PyAV) happen inside main(): decoding workers are spawned processes that
# re-import this script, and should not pay for them.

_HWM_DIR = "FEDTWIN_BENCH_HWM_DIR"  # where workers leave their peak RSS, one file per process


def measuring_decoder(job):  # noqa: ANN001, ANN201 (VideoJob -> DecodedVideo)
    """``decode_video`` that also records this process's own peak RSS (KiB) in ``$FEDTWIN_BENCH_HWM_DIR``."""
    from fedtwin.pipelines.data.video_decode import decode_video

    result = decode_video(job)
    status = Path("/proc/self/status")
    if status.exists() and os.environ.get(_HWM_DIR):
        hwm = next((line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM")), "0")
        (Path(os.environ[_HWM_DIR]) / f"{os.getpid()}.txt").write_text(hwm)
    return result


CODECS = {"mp4": ("libx264", "yuv420p"), "webm": ("libvpx-vp9", "yuv420p"), "avi": ("mjpeg", "yuvj420p")}


def make_video(
    path: Path, frames: int, size: int, fps: int, label: int, classes: int, rng: np.random.Generator
) -> None:
    """A square moving in a class-dependent direction over a gradient, with a little noise."""
    import av

    codec, pix_fmt = CODECS[path.suffix[1:]]
    angle = 2 * np.pi * label / classes
    step = np.array([np.sin(angle), np.cos(angle)]) * size / (2 * frames)
    pos = rng.uniform(size * 0.25, size * 0.55, 2)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([40 + 80 * x / size, 40 + 80 * y / size, 90 + 0 * x], -1)
    side = size // 5
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        for t in range(frames):
            img = base + rng.normal(0, 4, base.shape)
            top, left = (np.clip(pos + step * t, 0, size - side)).astype(int)
            img[top : top + side, left : left + side] = 230
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def generate(root: Path, n: int, seconds: float, size: int, fps: int, classes: int, containers: list[str]) -> int:
    """Write ``n`` videos into ``root/<class>/``; returns their total bytes."""
    rng = np.random.default_rng(0)
    total = 0
    for i in range(n):
        label = i % classes
        path = root / f"c{label:02d}" / f"v{i:05d}.{containers[i % len(containers)]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        make_video(path, max(1, round(seconds * fps)), size, fps, label, classes, rng)
        total += path.stat().st_size
    return total


def _mb(kilobytes: int) -> float:
    return kilobytes / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    """Run the benchmark, print its table and write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=64, help="generated frame side (px)")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--containers", default="mp4", help="comma-separated, from mp4, webm, avi")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--clips-per-video", type=int, default=2)
    parser.add_argument("--out-size", default="32x32", help="imported frame HxW")
    parser.add_argument("--out-dir", default="docs/results", help="where import.md and import.json go")
    args = parser.parse_args()

    from fedtwin.pipelines.data.video_decode import ImportConfig, parse_size
    from fedtwin.pipelines.data.video_import import import_videos
    from fedtwin.pipelines.data.video_sources import discover_folders

    containers = [c.strip() for c in args.containers.split(",") if c.strip()]
    cfg = ImportConfig(
        frames=args.frames,
        stride=args.stride,
        clips_per_video=args.clips_per_video,
        size=parse_size(args.out_size),
        workers=args.workers,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        src_bytes = generate(root / "src", args.videos, args.seconds, args.size, args.fps, args.classes, containers)
        t_gen = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        hwm_dir = root / "hwm"
        hwm_dir.mkdir()
        os.environ[_HWM_DIR] = str(hwm_dir)  # inherited by the spawned workers
        t0 = time.perf_counter()
        result = import_videos(discover_folders(root / "src"), root / "ds", cfg, decoder=measuring_decoder)
        t_import = time.perf_counter() - t0
        rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out_bytes = sum(f.stat().st_size for f in (root / "ds").iterdir())
        clips = sum(s.num_examples for s in result.manifest.splits.values())
        worker_hwm = max((int(f.read_text()) for f in hwm_dir.iterdir()), default=0)

    row = {
        "videos": args.videos,
        "containers": containers,
        "video": f"{args.seconds:g} s, {args.size}x{args.size}, {args.fps} fps",
        "workers": args.workers,
        "clips": clips,
        "clip_shape": list(cfg.clip_shape),
        "skipped": len(result.skipped),
        "generate_s": round(t_gen, 2),
        "import_s": round(t_import, 2),
        "videos_per_s": round(args.videos / t_import, 1),
        "source_mb": round(src_bytes / 1e6, 2),
        "dataset_mb": round(out_bytes / 1e6, 2),
        "peak_rss_self_mb": round(_mb(rss_self), 1),
        "rss_self_before_import_mb": round(_mb(rss_before), 1),
        "peak_rss_children_getrusage_mb": round(_mb(rss_child), 1),
        "peak_rss_worker_own_mb": round(_mb(worker_hwm), 1),
        "cpus": os.cpu_count(),
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
    }
    header = (
        "| videos | workers | clips | import s | videos/s | peak RSS self MB (before import) "
        "| peak RSS children MB (getrusage) | peak RSS per worker MB (own) |"
    )
    line = (
        f"| {row['videos']} | {row['workers']} | {row['clips']} | {row['import_s']} | {row['videos_per_s']} | "
        f"{row['peak_rss_self_mb']} ({row['rss_self_before_import_mb']}) | "
        f"{row['peak_rss_children_getrusage_mb']} | {row['peak_rss_worker_own_mb']} |"
    )
    table = "\n".join([header, "|---|---|---|---|---|---|---|---|", line])
    print(table)
    print(
        f"generation {t_gen:.1f}s (not timed as import); "
        f"{row['source_mb']} MB of video -> {row['dataset_mb']} MB dataset"
    )

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "import.json").write_text(json.dumps(row, indent=2) + "\n")
    md = [
        "# Video import benchmark",
        "",
        f"`python benchmarks/bench_import.py --videos {args.videos}` — {args.videos} generated videos "
        f"({row['video']}, {', '.join(containers)}, {args.classes} classes) imported as "
        f"{args.clips_per_video} clips of {list(cfg.clip_shape)} (T, C, H, W) per video "
        f"(stride {args.stride}); {row['cpus']} CPUs, {row['machine']}.",
        "",
        table,
        "",
        f"Generation took {row['generate_s']} s and is not part of the import time. Source "
        f"{row['source_mb']} MB, dataset {row['dataset_mb']} MB. Peak RSS: `getrusage` max RSS of this "
        "process (in brackets: before the import started; it holds the generator and the imported "
        "libraries) and of its children; a child's getrusage peak includes the parent's RSS when it "
        "was started, so the last column is each worker's own peak (`VmHWM`), the largest of them.",
        "",
    ]
    (out / "import.md").write_text("\n".join(md))
    print(f"wrote {out / 'import.md'} and {out / 'import.json'}")


if __name__ == "__main__":
    main()
