"""Benchmark: partition 60,000 moving-digit clips over 10,000 devices (Dirichlet 0.5) and load shards.

Usage: python benchmarks/bench_partition.py [--clips 60000] [--devices 10000] [--frames 8] [--size 32]

Prints the wall time of each step. The source dataset is generated first (not timed as partitioning).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, make_moving_digits_dataset
from fedtwin.pipelines.data.partition import (
    PartitionConfig,
    load_device_shard,
    load_partition_manifest,
    partition_dataset,
)


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60_000, help="train clips (split evenly over 10 classes)")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--shard-loads", type=int, default=200, help="random devices to load for the shard timing")
    args = parser.parse_args()

    digit = min(16, args.size)
    cfg = MovingDigitsConfig(
        frames=args.frames, size=args.size, digit_size=digit, train_per_class=args.clips // 10, test_per_class=100
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_moving_digits_dataset(root / "src", cfg, seed=0)
        t_make = time.perf_counter() - t0

        pcfg = PartitionConfig(devices=args.devices, scheme="dirichlet", alpha=args.alpha, seed=0)
        t0 = time.perf_counter()
        partition_dataset(root / "src", root / "part", pcfg)
        t_part = time.perf_counter() - t0

        t0 = time.perf_counter()
        manifest = load_partition_manifest(root / "part")
        t_manifest = time.perf_counter() - t0

        ids = np.random.default_rng(0).choice(args.devices, min(args.shard_loads, args.devices), replace=False)
        times = []
        for device_id in ids:
            t0 = time.perf_counter()
            load_device_shard(manifest, int(device_id))
            times.append(time.perf_counter() - t0)
        size_mb = sum(f.stat().st_size for f in (root / "part").rglob("*") if f.is_file()) / 1e6
        files = len(list((root / "part" / "devices").iterdir()))

    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(
        f"workload: {args.clips} train clips of {list(cfg.clip_shape)} uint8 over {args.devices} devices, "
        f"dirichlet alpha={args.alpha}"
    )
    print(f"{'step':<44}{'seconds':>10}")
    print(f"{'generate + write source dataset':<44}{t_make:>10.2f}")
    print(f"{'partition_dataset (read, assign, write all)':<44}{t_part:>10.2f}")
    print(f"{'load_partition_manifest':<44}{t_manifest:>10.3f}")
    print(f"{'load_device_shard, median of ' + str(len(ids)):<44}{np.median(times):>10.4f}")
    print(f"{'load_device_shard, max':<44}{np.max(times):>10.4f}")
    print(
        f"device files: {files}, partition size on disk: {size_mb:.0f} MB, "
        f"examples per device: mean {manifest.num_examples.mean():.1f}, min {manifest.num_examples.min()}, "
        f"max {manifest.num_examples.max()}, JS mean {manifest.js.mean():.3f}"
    )


if __name__ == "__main__":
    main()
