"""``plots/partition.png`` of a partition: who holds which labels, and how skewed each device is.

Left: a heatmap of label counts, devices along x and classes along y (counts printed in the cells when
the grid is small). Right: the distribution of per-device Jensen-Shannon divergence to the label
distribution of all device data (the heterogeneity FedDU measures), with its mean and the ``shared``
split's JS marked. matplotlib with the Agg backend; the file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedtwin.pipelines.core.atomic_write import write_with
from fedtwin.pipelines.data.partition_manifest import PartitionManifest

#: Cells up to which counts are printed inside the heatmap.
_ANNOTATE_MAX_CELLS = 400
#: Devices up to which every device gets a tick label (its group name for by-group partitions).
_TICK_ALL_MAX = 40


def plot_partition(manifest: PartitionManifest, path: str | Path) -> Path:
    """Draw the label-count heatmap and the per-device JS histogram of ``manifest`` into ``path`` (PNG).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = manifest.label_histograms.T  # (classes, devices)
    k, n = counts.shape
    width = min(16.0, max(6.0, 3.5 + 0.16 * n))
    fig, (ax, ax_js) = plt.subplots(
        1, 2, figsize=(width + 4.0, max(3.2, 1.2 + 0.32 * k)), gridspec_kw={"width_ratios": [width, 4.0]}
    )
    image = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0)
    if k * n <= _ANNOTATE_MAX_CELLS:
        threshold = counts.max() / 2 if counts.size else 0
        for (c, d), value in np.ndenumerate(counts):
            if value:
                ax.text(
                    d,
                    c,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if value > threshold else "white",
                )
    ax.set_yticks(range(k), labels=[_short(name) for name in manifest.class_names], fontsize=8)
    _device_ticks(ax, manifest)
    ax.set_ylabel("class")
    ax.set_title(f"label counts per device ({int(manifest.num_examples.sum())} train clips)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01, label="clips")

    js = manifest.js
    top = max(0.05, float(js.max()), manifest.shared.js or 0.0) * 1.05
    ax_js.hist(js, bins=20, range=(0.0, top), color="tab:blue")
    ax_js.axvline(float(js.mean()), color="black", linestyle="--", linewidth=1, label=f"mean {js.mean():.3f}")
    if manifest.shared.js is not None:
        ax_js.axvline(manifest.shared.js, color="tab:red", linewidth=1.2, label=f"shared {manifest.shared.js:.3f}")
    ax_js.set_xlabel("JS divergence to all device labels")
    ax_js.set_ylabel("devices")
    ax_js.set_title("per-device label skew", fontsize=10)
    ax_js.legend(fontsize=8)

    params = ", ".join(f"{key}={value}" for key, value in manifest.params.items())
    fig.suptitle(f"{manifest.scheme}{f' ({params})' if params else ''}: {n} devices, seed {manifest.seed}", fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_with(out, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out


def _device_ticks(ax: Any, manifest: PartitionManifest) -> None:
    """Every device labelled (by its group when known) for small partitions, a few ids otherwise."""
    n = manifest.num_devices
    if n <= _TICK_ALL_MAX:
        names = manifest.device_groups or tuple(str(d) for d in range(n))
        rotation = 45 if manifest.device_groups else 0
        ax.set_xticks(range(n), labels=[_short(name) for name in names], fontsize=7, rotation=rotation)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("device (group)" if manifest.device_groups else "device")


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
