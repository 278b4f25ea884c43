"""``fedtwin data ...`` subcommands: make a moving-digits dataset, partition a dataset over devices.

The main CLI calls :func:`add_data_commands` on its subparsers and runs ``args.func(args)``; user
errors are raised as ``FedtwinError`` (``DatasetError``), which the main CLI turns into one stderr
line and exit code 2.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipelines.core.errors import DatasetError
from pipelines.data.moving_digits import MovingDigitsConfig, ShiftConfig, make_moving_digits_dataset
from pipelines.data.partition import PARTITIONERS, PartitionConfig, partition_dataset


def add_data_commands(subparsers: Any) -> None:
    """Register ``data make moving-digits`` and ``data partition`` on the main CLI's subparsers."""
    data = subparsers.add_parser("data", help="make and partition datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="{make,partition}", required=True)

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

    part = data_sub.add_parser(
        "partition",
        help="split a dataset into per-device shards, a shared server split and the test split",
        description="Partition dataset IN/ (train and test splits) into OUT/ for federated runs.",
    )
    part.add_argument("in_dir", metavar="IN", help="dataset directory (from `fedtwin data make`)")
    part.add_argument("out", metavar="OUT", help="partition directory to create")
    part.add_argument("--devices", type=int, required=True)
    part.add_argument("--scheme", choices=sorted(PARTITIONERS), default=PartitionConfig.scheme)
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
    manifest = make_moving_digits_dataset(args.out, cfg, args.seed, overwrite=args.overwrite)
    counts = ", ".join(f"{name} {s.num_examples}" for name, s in manifest.splits.items())
    print(
        f"wrote {manifest.directory}: {counts} clips of {list(manifest.clip_shape)} (T, C, H, W), "
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
    start = time.perf_counter()
    m = partition_dataset(args.in_dir, args.out, cfg, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    params = ", ".join(f"{k}={v}" for k, v in m.params.items())
    sizes = m.num_examples
    print(
        f"wrote {m.directory}: {m.num_devices} devices ({m.scheme}{' ' + params if params else ''}, seed {m.seed}) "
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
    return 0
