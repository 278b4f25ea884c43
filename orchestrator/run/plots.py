"""Plots for a run folder: training curves and confusion matrices (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedtwin.pipelines.core.atomic_write import write_with

#: Axis titles of record keys that are not self-explanatory.
AXIS_LABELS = {"sim_time_s": "modelled time (s)"}


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    x: str = "round",
    panels: Sequence[tuple[Any, ...]] = (
        ("accuracy", ("test_accuracy",)),
        ("loss", ("test_loss", "train_loss")),
    ),
    title: str = "",
) -> Path | None:
    """One panel per ``(ylabel, keys)`` or ``(ylabel, keys, x_key)`` (that panel's x axis instead of ``x``);
    keys missing from every record are skipped. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [(p[0], [k for k in p[1] if any(k in r for r in records)], p[2] if len(p) > 2 else x) for p in panels]
    drawn = [(label, keys, px) for label, keys, px in drawn if keys and any(px in r for r in records)]
    if not records or not drawn:
        return None
    fig, axes = plt.subplots(1, len(drawn), figsize=(5 * len(drawn), 3.6), squeeze=False)
    for ax, (label, keys, px) in zip(axes[0], drawn, strict=True):
        for key in keys:
            pts = [(r[px], r[key]) for r in records if key in r and r[key] is not None and r.get(px) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", markersize=2.5, label=key)
        ax.set_xlabel(AXIS_LABELS.get(px, px))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_confusion(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, *, title: str = ""
) -> Path | None:
    """A confusion matrix (rows: true class, columns: predicted) coloured by row share, counts printed.

    Colours are row-normalised (a row is that class's recall spread over the predictions), so classes
    with few test clips read as clearly as large ones; the cell text is the raw count. Counts are left
    out above 30 classes. Returns the path, or None for an empty matrix.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    k = counts.shape[0] if counts.ndim == 2 else 0
    if k == 0 or counts.shape != (k, k):
        return None
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape, dtype=np.float64), where=support > 0)
    size = min(14.0, max(4.0, 1.2 + 0.45 * k))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if k <= 30:
        for (i, j), value in np.ndenumerate(counts):
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                fontsize=8 if k <= 12 else 6,
                color="white" if share[i, j] > 0.6 else "black",
            )
    names = [n if len(n) <= 14 else n[:13] + "…" for n in map(str, class_names)]
    slanted = max(map(len, names)) > 2  # long names would overlap on the x axis
    ax.set_xticks(
        range(k), labels=names, rotation=45 if slanted else 0, ha="right" if slanted else "center", fontsize=8
    )
    ax.set_yticks(range(k), labels=names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(counts.sum())
    accuracy = float(np.trace(counts)) / total if total else float("nan")
    ax.set_title(f"{title + ': ' if title else ''}accuracy {accuracy:.3f} on {total} clips", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    path = Path(path)
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
