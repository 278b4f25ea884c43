"""Training-curve plots for a run folder (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core.atomic_write import write_with


def plot_curves(
    records: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    x: str = "round",
    panels: Sequence[tuple[str, Sequence[str]]] = (("accuracy", ("test_accuracy",)), ("loss", ("test_loss", "train_loss"))),
    title: str = "",
) -> Path | None:
    """One panel per ``(ylabel, keys)``; keys missing from every record are skipped. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(label, [k for k in keys if any(k in r for r in records)]) for label, keys in panels]
    panels = [(label, keys) for label, keys in panels if keys]
    if not records or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            pts = [(r[x], r[key]) for r in records if key in r and r[key] is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", markersize=2.5, label=key)
        ax.set_xlabel(x)
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
