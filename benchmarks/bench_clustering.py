"""Time the per-epoch clustering of recipe ``mutual`` at scale: 50,000 x 128 features, K = 10.

Target: clustering 50,000 x 128 features with K=10 takes under 10 s on 2 cores. The
features are synthetic unit rows around 10 random directions (plus noise, so Lloyd needs several
iterations), which is the shape of the work, not its difficulty. Three timings, best of ``--repeats``:

- ``CosineKMeans(10).fit`` alone, with the recipe's defaults (3 k-means++ restarts);
- the full ``make_pseudo_labels`` of one epoch in ``cross`` mode (two clusterings of 50,000 x 128,
  id matching, centroids in each twin's space);
- the same in ``shared`` mode (one clustering of the combined 50,000 x 256 matrix).

Usage::

    python benchmarks/bench_clustering.py            # prints a table, ~1 minute on 2 cores
    python benchmarks/bench_clustering.py --rows 5000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from fedtwin.pipelines.mutual.clustering import CosineKMeans
from fedtwin.pipelines.mutual.kreciprocal import l2_normalize
from fedtwin.pipelines.mutual.pseudo_labels import ClusterSettings, make_pseudo_labels


def features(rows: int, dim: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows near ``k`` random directions; returns ``(X, true_labels)``."""
    rng = np.random.default_rng(seed)
    centers = l2_normalize(rng.normal(size=(k, dim)))
    labels = rng.integers(0, k, rows)
    X = centers[labels] + rng.normal(scale=0.6 / np.sqrt(dim), size=(rows, dim)).astype(np.float32)
    return l2_normalize(X), labels


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fa, truth = features(args.rows, args.dim, args.k, seed=0)
    fb, _ = features(args.rows, args.dim, args.k, seed=0)
    fb = l2_normalize(fb + np.random.default_rng(1).normal(scale=0.02, size=fb.shape).astype(np.float32))
    settings = ClusterSettings(num_clusters=args.k)
    print(f"{args.rows} x {args.dim} features, K={args.k}, {os.cpu_count()} CPUs, best of {args.repeats}")
    seconds, km = best_of(args.repeats, lambda: CosineKMeans(args.k, random_state=0).fit(fa))
    nmi = normalized_mutual_info_score(truth, km.labels_)  # type: ignore[attr-defined]
    print(f"| CosineKMeans.fit (n_init=3) | {seconds:.2f} s | NMI {nmi:.3f} |")
    for mode in ("cross", "shared"):
        seconds, _ = best_of(args.repeats, lambda m=mode: make_pseudo_labels([fa, fb], m, settings, seed=0))
        print(f"| make_pseudo_labels ({mode}) | {seconds:.2f} s | |")


if __name__ == "__main__":
    main()
