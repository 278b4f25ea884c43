"""The sweep summary: every trial in one table sorted by the objective, the best config, a plot.

Written next to Tune's own trial folders (which keep their CSV/JSON/TensorBoard logs)::

    sweep.csv   sweep.md   best.yaml   plots/objective.png
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.tune.sweep_config import Dimension
from fedtwin.pipelines.core.atomic_write import write_text_atomic, write_with


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome."""

    trial_id: str
    status: str  # completed | stopped early | error | unfinished
    params: dict[str, Any]
    rounds: int
    objective: float | None
    accuracy: float | None
    best_accuracy: float | None
    rounds_to_target: int | None
    error: str = ""
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepTable:
    """All trials, best first (trials without a result last)."""

    rows: list[TrialRow]
    metric: str
    mode: str  # max | min
    keys: list[str]

    @property
    def best(self) -> TrialRow | None:
        """The best trial with a result, if any."""
        return self.rows[0] if self.rows and self.rows[0].objective is not None else None


def trial_status(tune_status: str, rounds: int, max_rounds: int) -> str:
    """Our word for a Tune status: a TERMINATED trial short of ``max_rounds`` was stopped early."""
    if tune_status == "TERMINATED":
        return "completed" if rounds >= max_rounds else "stopped early"
    if tune_status == "ERROR":
        return "error"
    return "unfinished"


def build_table(
    trials: Sequence[Any], *, keys: Sequence[str], metric: str, mode: str, accuracy_key: str, max_rounds: int
) -> SweepTable:
    """Rows from Tune ``Trial`` objects (``status``, ``config``, ``last_result``, ``path``)."""
    rows = []
    for trial in trials:
        last: Mapping[str, Any] = trial.last_result or {}
        rounds = int(last.get("round", 0) or 0)
        error = ""
        if trial.status == "ERROR":
            err = trial.get_error() if hasattr(trial, "get_error") else None
            error = _error_line(str(err)) if err is not None else "failed (see the trial folder's error.txt)"
        rtt = last.get("rounds_to_target")
        rows.append(
            TrialRow(
                trial_id=str(trial.trial_id),
                status=trial_status(str(trial.status), rounds, max_rounds),
                params={k: trial.config.get(k) for k in keys},
                rounds=rounds,
                objective=_num(last.get(metric)),
                accuracy=_num(last.get(accuracy_key)),
                best_accuracy=_num(last.get(f"best_{accuracy_key}")),
                rounds_to_target=int(rtt) if rtt is not None and last.get("target_reached") else None,
                error=error,
                path=str(trial.path or ""),
            )
        )
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda r: (r.objective is None, sign * (r.objective or 0.0), r.trial_id))
    return SweepTable(rows, metric, mode, list(keys))


def to_csv(table: SweepTable) -> str:
    """One line per trial, best first."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "rank",
            "trial_id",
            "status",
            *table.keys,
            "rounds",
            table.metric,
            "accuracy",
            "best_accuracy",
            "rounds_to_target",
            "error",
            "path",
        ]
    )
    for rank, row in enumerate(table.rows, 1):
        writer.writerow(
            [
                rank,
                row.trial_id,
                row.status,
                *(row.params.get(k) for k in table.keys),
                row.rounds,
                _cell(row.objective),
                _cell(row.accuracy),
                _cell(row.best_accuracy),
                "" if row.rounds_to_target is None else row.rounds_to_target,
                row.error,
                row.path,
            ]
        )
    return buf.getvalue()


def to_markdown(table: SweepTable, header: Mapping[str, Any]) -> str:
    """A readable report: settings, then the table (best first)."""
    lines = [f"# Sweep {header.get('name', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "name"]
    lines += [
        "",
        "| rank | trial | status | "
        + " | ".join(_short(k) for k in table.keys)
        + f" | rounds | {table.metric} ({table.mode}) | accuracy | rounds to target |",
        "|" + "---|" * (len(table.keys) + 7),
    ]
    for rank, row in enumerate(table.rows, 1):
        params = " | ".join(_cell(row.params.get(k)) for k in table.keys)
        rtt = "-" if row.rounds_to_target is None else str(row.rounds_to_target)
        status = row.status + (f": {row.error[:60]}" if row.error else "")
        lines.append(
            f"| {rank} | {row.trial_id} | {status} | {params} | {row.rounds} | {_cell(row.objective)} | "
            f"{_cell(row.accuracy)} | {rtt} |"
        )
    return "\n".join(lines) + "\n"


def best_spec(base: ExperimentSpec, table: SweepTable, sweep_name: str) -> ExperimentSpec | None:
    """The base experiment with the best trial's values: runnable as-is with ``fedtwin run``."""
    best = table.best
    if best is None:
        return None
    return base.with_overrides({**best.params, "name": f"{sweep_name}-best"})


def write_summary(
    out_dir: Path,
    table: SweepTable,
    header: Mapping[str, Any],
    base: ExperimentSpec,
    dims: Sequence[Dimension],
    sweep_name: str,
) -> dict[str, Path]:
    """Write ``sweep.csv``, ``sweep.md``, ``best.yaml`` and ``plots/objective.png``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"csv": out_dir / "sweep.csv", "md": out_dir / "sweep.md"}
    write_text_atomic(written["csv"], to_csv(table))
    write_text_atomic(written["md"], to_markdown(table, header))
    spec = best_spec(base, table, sweep_name)
    if spec is not None:
        best = table.best
        assert best is not None  # best_spec returns a spec only when the table has a best trial
        written["best"] = out_dir / "best.yaml"
        note = f"# best trial {best.trial_id} of sweep {sweep_name}: {table.metric} = {best.objective}\n"
        write_text_atomic(written["best"], note + yaml.safe_dump(spec.to_dict(), sort_keys=False))
    plot = plot_objective(table, dims, out_dir / "plots" / "objective.png")
    if plot is not None:
        written["plot"] = plot
    return written


def plot_objective(table: SweepTable, dims: Sequence[Dimension], path: Path) -> Path | None:
    """One panel per searched key: the objective of each trial against its value (best trial marked)."""
    points = [r for r in table.rows if r.objective is not None]
    if not points or not dims:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.4), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        if dim.is_range:
            xs = [float(r.params[dim.key]) for r in points]
            if dim.kind == "loguniform":
                from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            labels = [str(v) for v in dim.values]
            xs = [labels.index(str(r.params[dim.key])) if str(r.params[dim.key]) in labels else -1 for r in points]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ys = [r.objective for r in points]
        colors = ["tab:green" if r.status == "completed" else "tab:gray" for r in points]
        ax.scatter(xs, ys, c=colors, s=28)
        ax.scatter([xs[0]], [ys[0]], marker="*", s=160, c="tab:red", label="best")
        ax.set_xlabel(_short(dim.key))
        ax.set_ylabel(f"{table.metric} ({table.mode})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle("objective per trial (green: ran all rounds, gray: stopped early / unfinished)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(key: str) -> str:
    """``strategy.params.decay`` -> ``decay`` (the table and plot stay narrow)."""
    return key.rsplit(".", 1)[-1]


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
