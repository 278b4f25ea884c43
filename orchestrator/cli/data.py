"""``fedtwin data ...`` subcommands: make a moving-digits dataset, import real videos, draw a contact
sheet, partition a dataset over devices.

The main CLI calls :func:`add_data_commands` on its subparsers and runs ``args.func(args)``; user
errors are raised as ``FedtwinError`` (``DatasetError``), which the main CLI turns into one stderr
line and exit code 2.

Every IN/OUT/DIR may be a local folder or a URI (``s3://bucket/prefix``, ``gs://``, ``file://``): an
output on object storage is written locally and uploaded with its ``manifest.json`` last, an input on
object storage that the partitioner reads whole is downloaded first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.atomic_write import check_remote_output, staged_input, staged_output
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, ShiftConfig, make_moving_digits_dataset
from fedtwin.pipelines.data.partition_config import PartitionConfig
from fedtwin.pipelines.data.partitioners import PARTITIONERS

# Every fedtwin command builds this parser, so the partition writer and its pyarrow are imported in
# `_partition`, not here (the moving-digits generator imports scipy and pyarrow itself, when it runs).


def add_data_commands(subparsers: Any) -> None:
    """Register ``data make moving-digits``, ``data import-videos``, ``data show`` and ``data partition``."""
    data = subparsers.add_parser("data", help="make, import, show and partition datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="{make,import-videos,show,partition}", required=True)

    make = data_sub.add_parser("make", help="generate a dataset")
    make_sub = make.add_subparsers(dest="generator", metavar="{moving-digits}", required=True)
    md = make_sub.add_parser(
        "moving-digits",
        help="video clips of moving sklearn digits (no download)",
        description="Generate moving-digits clips (train and test from disjoint source digits) into OUT/.",
    )
    md.add_argument("out", metavar="OUT", help="dataset directory to create")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--frames", type=int, default=MovingDigitsConfig.frames, help="frames per clip (T)")
    md.add_argument("--size", type=int, default=MovingDigitsConfig.size, help="frame height and width")
    md.add_argument("--digit-size", type=int, default=MovingDigitsConfig.digit_size)
    md.add_argument("--train-per-class", type=int, default=MovingDigitsConfig.train_per_class)
    md.add_argument("--test-per-class", type=int, default=MovingDigitsConfig.test_per_class)
    md.add_argument("--noise-std", type=float, default=MovingDigitsConfig.noise_std)
    md.add_argument(
        "--speed",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=MovingDigitsConfig.speed,
        help="pixels per frame",
    )
    md.add_argument("--class-motion", action="store_true", help="direction of motion depends on the class")
    md.add_argument("--shift", action="store_true", help="shifted domain: blur, lower contrast, extra noise")
    md.add_argument("--shift-blur", type=float, default=ShiftConfig.blur_sigma, help="blur sigma (with --shift)")
    md.add_argument("--shift-contrast", type=float, default=ShiftConfig.contrast, help="contrast factor (with --shift)")
    md.add_argument("--shift-noise", type=float, default=ShiftConfig.noise_std, help="extra noise std (with --shift)")
    md.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    md.set_defaults(func=_make_moving_digits)
    _add_import_videos(data_sub)
    _add_show(data_sub)

    part = data_sub.add_parser(
        "partition",
        help="split a dataset into per-device shards, a shared server split and the test split",
        description="Partition dataset IN/ (train and test splits) into OUT/ for federated runs.",
    )
    part.add_argument("in_dir", metavar="IN", help="dataset directory (from `fedtwin data make` or `import-videos`)")
    part.add_argument("out", metavar="OUT", help="partition directory to create")
    part.add_argument(
        "--devices",
        type=int,
        default=None,
        help="number of devices (required, except for by-group: one device per group; if given it must match)",
    )
    part.add_argument(
        "--scheme",
        default=PartitionConfig.scheme,
        help=f"{', '.join(sorted(PARTITIONERS))}, an entry point of fedtwin.partitioners or "
        "pkg.module:Class; whole videos are assigned, by-group makes one device per group",
    )
    part.add_argument("--alpha", type=float, default=PartitionConfig.alpha, help="Dirichlet concentration")
    part.add_argument("--labels-per-device", type=int, default=PartitionConfig.labels_per_device, help="shards scheme")
    part.add_argument(
        "--min-size", type=int, default=PartitionConfig.min_size, help="Dirichlet: examples per device at least"
    )
    part.add_argument(
        "--shared-fraction",
        type=float,
        default=PartitionConfig.shared_fraction,
        help="share of train held by the server as the shared split",
    )
    part.add_argument("--shared-classes", type=int, default=None, help="restrict the shared split to K classes")
    part.add_argument("--devices-per-file", type=int, default=PartitionConfig.devices_per_file)
    part.add_argument("--seed", type=int, required=True)
    part.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    part.add_argument("--no-plot", action="store_true", help="skip OUT/plots/partition.png")
    part.set_defaults(func=_partition)


def _build(cls: Callable[..., Any], options: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    """Build a config, turning its ``ValueError("field: ...")`` into a ``DatasetError`` on the CLI option.

    The option is ``options[field]`` if given, else ``--field-name``.
    """
    try:
        return cls(**kwargs)
    except ValueError as err:
        field, sep, rest = str(err).partition(":")
        if not sep or " " in field:
            raise DatasetError(str(err)) from None
        option = (options or {}).get(field, f"--{field.replace('_', '-')}")
        raise DatasetError(f"{option}:{rest}") from None


_SHIFT_OPTIONS = {"blur_sigma": "--shift-blur", "contrast": "--shift-contrast", "noise_std": "--shift-noise"}


def _make_moving_digits(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise DatasetError(f"--seed: must be >= 0, got {args.seed}")
    shift = None
    if args.shift:
        shift = _build(
            ShiftConfig,
            _SHIFT_OPTIONS,
            blur_sigma=args.shift_blur,
            contrast=args.shift_contrast,
            noise_std=args.shift_noise,
        )
    cfg = _build(
        MovingDigitsConfig,
        frames=args.frames,
        size=args.size,
        digit_size=args.digit_size,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        noise_std=args.noise_std,
        speed=tuple(args.speed),
        class_motion=args.class_motion,
        shift=shift,
    )
    start = time.perf_counter()
    _check_out(args.out, args.overwrite)
    with staged_output(args.out, args.overwrite, what="OUT") as local:
        manifest = make_moving_digits_dataset(local, cfg, args.seed, overwrite=args.overwrite)
    counts = ", ".join(f"{name} {s.num_examples}" for name, s in manifest.splits.items())
    out = args.out if storage.is_remote(args.out) else manifest.directory
    print(
        f"wrote {out}: {counts} clips of {list(manifest.clip_shape)} (T, C, H, W), "
        f"{manifest.num_classes} classes, in {time.perf_counter() - start:.1f}s"
    )
    return 0


def _partition(args: argparse.Namespace) -> int:
    cfg = _build(
        PartitionConfig,
        devices=args.devices,
        scheme=args.scheme,
        alpha=args.alpha,
        labels_per_device=args.labels_per_device,
        min_size=args.min_size,
        shared_fraction=args.shared_fraction,
        shared_classes=args.shared_classes,
        seed=args.seed,
        devices_per_file=args.devices_per_file,
    )
    from fedtwin.pipelines.data.partition import partition_dataset
    from fedtwin.pipelines.data.partition_manifest import record_source

    start = time.perf_counter()
    storage.check_location(args.in_dir, "IN")
    _check_out(args.out, args.overwrite)
    with staged_input(args.in_dir) as in_dir, staged_output(args.out, args.overwrite, what="OUT") as local:
        m = partition_dataset(in_dir, local, cfg, overwrite=args.overwrite)
        if storage.is_remote(args.in_dir):
            record_source(local, args.in_dir)
        plot = None
        if not args.no_plot:
            from fedtwin.pipelines.data.partition_plot import plot_partition  # matplotlib only when drawing

            plot = plot_partition(m, local / "plots" / "partition.png")
    where = str(args.out) if storage.is_remote(args.out) else str(m.directory)
    elapsed = time.perf_counter() - start
    params = ", ".join(f"{k}={v}" for k, v in m.params.items())
    sizes = m.num_examples
    print(
        f"wrote {where}: {m.num_devices} devices ({m.scheme}{' ' + params if params else ''}, seed {m.seed}) "
        f"in {elapsed:.1f}s"
    )
    print(
        f"  device examples: total {int(sizes.sum())}, min {int(sizes.min())}, "
        f"median {float(np.median(sizes)):g}, max {int(sizes.max())}"
    )
    print(f"  JS to global label distribution: mean {m.js.mean():.3f}, min {m.js.min():.3f}, max {m.js.max():.3f}")
    shared_js = f", JS {m.shared.js:.3f}" if m.shared.js is not None else ""
    classes = f", classes {list(m.shared.classes)}" if m.shared.classes is not None else ""
    print(f"  shared: {m.shared.num_examples} examples{classes}{shared_js}; test: {m.test.num_examples} examples")
    if m.device_groups is not None:
        print(f"  groups: {', '.join(f'{d}={g}' for d, g in enumerate(m.device_groups))}")
    if plot is not None:
        print(f"  plot: {storage.join(where, 'plots', 'partition.png')}")
    return 0


def _check_out(out: str, overwrite: bool) -> None:
    """OUT as a URI: a known scheme, an existing bucket we may write to, and empty unless --overwrite."""
    storage.check_scheme(out, "OUT")
    if storage.is_remote(out):
        check_remote_output(out, overwrite, "OUT")


def _add_import_videos(data_sub: Any) -> None:
    # Defaults come from ImportConfig; importing it is cheap (numpy only), PyAV is imported on use.
    from fedtwin.pipelines.data.video_decode import SAMPLINGS, SHORT_POLICIES, ImportConfig

    iv = data_sub.add_parser(
        "import-videos",
        help="decode real video files into a dataset (needs PyAV: pip install 'fedtwin[video]')",
        description=(
            "Decode videos from SRC/<label>/*.(mp4|webm|avi|mkv|mov) or from an index file into clips, "
            "written as dataset OUT/ (train and test splits, the same format as `data make`). Unreadable, "
            "truncated or video-less files are skipped and listed in OUT/manifest.json (info.skipped)."
        ),
    )
    iv.add_argument("src", metavar="SRC", nargs="?", help="folder with one subfolder of videos per class")
    iv.add_argument("out", metavar="OUT", help="dataset directory to create")
    iv.add_argument(
        "--index",
        metavar="FILE",
        help="CSV or JSONL with columns path, label and optional split (train/test), group; "
        "paths relative to SRC if given, else to FILE's folder",
    )
    iv.add_argument("--frames", type=int, default=ImportConfig.frames, help="frames per clip (T)")
    iv.add_argument("--stride", type=int, default=ImportConfig.stride, help="take every S-th frame")
    iv.add_argument("--clips-per-video", type=int, default=ImportConfig.clips_per_video, help="clips per video (K)")
    iv.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        default=ImportConfig.sampling,
        help="clip starts: evenly spaced, or uniform random (with --seed)",
    )
    iv.add_argument("--seed", type=int, default=ImportConfig.seed, help="uniform sampling and the train/test split")
    iv.add_argument("--size", default="32x32", help="output frame HxW (shorter side resized, centre-cropped)")
    iv.add_argument("--channels", type=int, choices=(1, 3), default=ImportConfig.channels, help="1 grey, 3 RGB")
    iv.add_argument("--fps", type=float, default=None, help="resample videos to this frame rate first (by timestamp)")
    iv.add_argument(
        "--short-videos",
        choices=SHORT_POLICIES,
        default=ImportConfig.short_videos,
        help="videos shorter than one clip: pad by repeating the last frame (one clip), or skip",
    )
    iv.add_argument(
        "--test-fraction",
        type=float,
        default=ImportConfig.test_fraction,
        help="share of each class's videos held out as test (ignored when the index has a split column)",
    )
    iv.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="decoding processes (default min(cpus, 4); 0 = in this process)",
    )
    iv.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    iv.add_argument("--quiet", action="store_true", help="no progress line")
    iv.set_defaults(func=_import_videos)


def _add_show(data_sub: Any) -> None:
    show = data_sub.add_parser(
        "show",
        help="draw a contact sheet PNG: a few clips per class, frames left to right",
        description="Draw a contact sheet of dataset DIR: PER_CLASS clips of every class, one row per clip.",
    )
    show.add_argument("dataset", metavar="DIR", help="dataset directory")
    show.add_argument("--out", metavar="PNG", help="output file (default DIR/contact_sheet_<split>.png)")
    show.add_argument("--per-class", type=int, default=2, help="clips per class")
    show.add_argument("--split", default="train")
    show.set_defaults(func=_show)


class _ImportProgress:
    """One progress line on stderr (rewritten in place on a terminal, every 10 s otherwise)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p: Any) -> None:
        if p.skip is not None:
            clear = "\r\033[K" if self.tty and not self.quiet else ""
            print(f"{clear}fedtwin: skipped {p.skip.path}: {p.skip.reason}", file=sys.stderr)
        now = time.monotonic()
        last = p.done == p.total
        if self.quiet or not (last or now - self.last >= (0.2 if self.tty else 10.0)):
            return
        self.last = now
        rate = p.done / p.seconds if p.seconds > 0 else 0.0
        line = f"import-videos: {p.done}/{p.total} videos, {p.clips} clips, {p.skipped} skipped, {rate:.1f} videos/s"
        end = "\n" if last or not self.tty else ""
        print(f"\r{line}" if self.tty else line, end=end, file=sys.stderr, flush=True)


_IMPORT_OPTIONS = {"short_videos": "--short-videos", "clips_per_video": "--clips-per-video"}


def _import_videos(args: argparse.Namespace) -> int:
    from fedtwin.pipelines.data.video_decode import ImportConfig, parse_size, require_av
    from fedtwin.pipelines.data.video_import import import_videos
    from fedtwin.pipelines.data.video_sources import discover_folders, read_index

    try:
        size = parse_size(args.size)
    except ValueError as err:
        raise DatasetError(f"--{err}") from None
    cfg = _build(
        ImportConfig,
        _IMPORT_OPTIONS,
        frames=args.frames,
        stride=args.stride,
        clips_per_video=args.clips_per_video,
        sampling=args.sampling,
        size=size,
        channels=args.channels,
        fps=args.fps,
        short_videos=args.short_videos,
        seed=args.seed,
        test_fraction=args.test_fraction,
        workers=args.workers,
    )
    require_av()
    _check_out(args.out, args.overwrite)
    if args.index:
        sources, where = read_index(args.index, base=args.src), args.index
    elif args.src:
        sources, where = discover_folders(args.src), args.src
    else:
        raise DatasetError("import-videos: give SRC (a folder of class folders) or --index FILE")
    with staged_output(args.out, args.overwrite, what="OUT") as local:
        result = import_videos(
            sources, local, cfg, source=str(where), overwrite=args.overwrite, progress=_ImportProgress(args.quiet)
        )
    m = result.manifest
    out = args.out if storage.is_remote(args.out) else m.directory
    counts = ", ".join(f"{name} {s.num_examples}" for name, s in m.splits.items())
    print(
        f"wrote {out}: {counts} clips of {list(m.clip_shape)} (T, C, H, W), {m.num_classes} classes, "
        f"from {result.imported} of {result.videos} videos ({len(result.skipped)} skipped, {result.padded} padded) "
        f"in {result.seconds:.1f}s"
    )
    if result.skipped:
        print(f"  skipped videos and their reasons: {storage.join(str(out), 'manifest.json')}, info.skipped")
    return 0


def _show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedtwin.pipelines.data.contact_sheet import write_contact_sheet

    storage.check_location(args.dataset, "DIR")
    if args.out:
        out = args.out
    elif storage.is_remote(args.dataset):  # a picture of a bucket's dataset lands in this folder
        out = f"contact_sheet_{storage.name_of(args.dataset)}_{args.split}.png"
    else:
        out = str(Path(args.dataset) / f"contact_sheet_{args.split}.png")
    sheet = write_contact_sheet(args.dataset, out, split=args.split, per_class=args.per_class)
    shown = sum(sheet.clips_per_class)
    print(f"wrote {sheet.path}: {shown} clips of {len(sheet.clips_per_class)} classes, {sheet.width}x{sheet.height} px")
    return 0
