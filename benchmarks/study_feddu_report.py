"""Tables and plot of the FedDU study (``benchmarks/study_feddu.py``) from its raw per-round curves.

Definitions used in the tables:

- *final accuracy*: the mean test accuracy over the last ``FINAL_WINDOW`` rounds of a run (single
  rounds of non-IID federated training oscillate), then mean +- std over seeds;
- *best accuracy*: the highest test accuracy of a run, then mean +- std over seeds;
- *rounds to X*: the first round whose test accuracy reaches X, per seed ("—" = never);
- *rounds to 0.8 x FedAvg*: on the seed-mean curve, the first round that reaches 0.8 x FedAvg's mean
  final accuracy in the same setting;
- *last gain*: the final accuracy minus the mean of the ``FINAL_WINDOW`` rounds before those, in
  points, mean over seeds: how much a run still rose at its end (near 0 or below: it has plateaued);
- a difference between two arms is *inside the seed spread* when its mean over seeds (paired by seed:
  same data, same partition) is not larger than the standard deviation of the per-seed differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FINAL_WINDOW = 5


def _runs(results: dict[str, Any], setting: str, arm: str) -> list[dict[str, Any]]:
    return sorted((r for r in results["runs"] if r["setting"] == setting and r["arm"] == arm), key=lambda r: r["seed"])


def _curve(run: dict[str, Any]) -> np.ndarray:
    return np.array([np.nan if a is None else a for a in run["test_accuracy"]], dtype=float)


def _final(run: dict[str, Any]) -> float:
    acc = _curve(run)
    return float(np.nanmean(acc[~np.isnan(acc)][-FINAL_WINDOW:]))


def _last_gain(run: dict[str, Any]) -> float:
    acc = _curve(run)
    acc = acc[~np.isnan(acc)]
    return float(100 * (np.mean(acc[-FINAL_WINDOW:]) - np.mean(acc[-2 * FINAL_WINDOW : -FINAL_WINDOW])))


def _first_reach(curve: np.ndarray, level: float) -> int | None:
    hits = np.flatnonzero(curve >= level)
    return int(hits[0]) + 1 if hits.size else None


def _mean_curve(runs: Sequence[dict[str, Any]]) -> np.ndarray:
    length = min(len(r["test_accuracy"]) for r in runs)
    return np.nanmean(np.stack([_curve(r)[:length] for r in runs]), axis=0)


def _arms_of(results: dict[str, Any], setting: str) -> list[str]:
    cfg = results["config"]
    if setting == cfg["settings"][0]:
        return list(cfg["arms"])
    return [a for a in cfg["arms"] if a not in cfg.get("headline_only_arms", ())]


def settings_with_runs(results: dict[str, Any]) -> list[str]:
    """Settings (in study order) whose arms all ran for every seed."""
    cfg = results["config"]
    return [
        s for s in cfg["settings"] if all(len(_runs(results, s, a)) == len(cfg["seeds"]) for a in _arms_of(results, s))
    ]


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (setting, arm) with the table's numbers."""
    cfg = results["config"]
    rows = []
    for setting in settings_with_runs(results):
        base = _runs(results, setting, "FedAvg")
        level = 0.8 * float(np.mean([_final(r) for r in base])) if base else None
        for arm in _arms_of(results, setting):
            runs = _runs(results, setting, arm)
            finals = [_final(r) for r in runs]
            bests = [float(np.nanmax(_curve(r))) for r in runs]
            rows.append(
                {
                    "setting": setting,
                    "arm": arm,
                    "seeds": [r["seed"] for r in runs],
                    "finals": finals,
                    "final_mean": float(np.mean(finals)),
                    "final_std": float(np.std(finals)),
                    "best_mean": float(np.mean(bests)),
                    "best_std": float(np.std(bests)),
                    "last_gain": float(np.mean([_last_gain(r) for r in runs])),
                    "to_target": {str(t): [_first_reach(_curve(r), t) for r in runs] for t in cfg["targets"]},
                    "to_level": None if level is None else _first_reach(_mean_curve(runs), level),
                    "level": level,
                    "mean_alpha": float(np.mean([np.mean([a or 0.0 for a in r["alpha_t"]]) for r in runs])),
                    "skipped": sum(r["skipped"] for r in runs),
                    "reverted": sum(r["reverted"] for r in runs),
                }
            )
    return rows


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, bool]:
    """(mean, std, inside the seed spread) of a's final minus b's final, paired by seed, in points."""
    fb = dict(zip(b["seeds"], b["finals"], strict=True))
    diffs = [100 * (f - fb[s]) for s, f in zip(a["seeds"], a["finals"], strict=True) if s in fb]
    if not diffs:
        return float("nan"), float("nan"), True
    mean, std = float(np.mean(diffs)), float(np.std(diffs))
    return mean, std, abs(mean) <= std


def check_targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The study's targets in each skewed-server setting, one line each with the numbers."""
    lines = []
    by = {(r["setting"], r["arm"]): r for r in rows}
    for setting in [s for s in dict.fromkeys(r["setting"] for r in rows) if "/skew" in s]:
        fedavg, feddu, naive, feddum = (by.get((setting, a)) for a in ("FedAvg", "FedDU", "naive full pass", "FedDUM"))
        if not (fedavg and feddu):
            continue
        checks = []
        n_avg, n_du = fedavg["to_level"], feddu["to_level"]
        if n_avg is None or n_du is None:
            checks.append(
                (
                    f"rounds to 0.8 x FedAvg final ({fedavg['level']:.3f}): FedAvg {n_avg}, FedDU {n_du} "
                    "(target FedDU <= 0.7 x FedAvg)",
                    False,
                )
            )
        else:
            checks.append(
                (
                    f"rounds to 0.8 x FedAvg final ({fedavg['level']:.3f}): FedDU {n_du} vs FedAvg {n_avg} "
                    f"= {n_du / n_avg:.2f}x (target <= 0.7x)",
                    n_du <= 0.7 * n_avg,
                )
            )
        for a, b, slack, text in (
            (feddu, fedavg, 0.0, "FedDU - FedAvg"),
            (feddu, naive, -1.0, "FedDU - naive"),
            (feddum, feddu, 0.0, "FedDUM - FedDU"),
        ):
            if a is None or b is None:  # an arm this study did not run
                continue
            mean, std, inside = paired_difference(a, b)
            diff = 100 * (a["final_mean"] - b["final_mean"])
            spread = "inside" if inside else "outside"
            checks.append(
                (
                    f"final {text} = {diff:+.1f} points (paired {mean:+.1f} ± {std:.1f}, {spread} the seed "
                    f"spread; target >= {slack:+.0f})",
                    diff >= slack,
                )
            )
        lines.extend(f"- `{setting}`: {text}: **{'met' if ok else 'missed'}**" for text, ok in checks)
    return lines


def _fmt_rounds(rounds: Sequence[int | None]) -> str:
    return ", ".join("—" if n is None else str(n) for n in rounds)


def results_table(results: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The main table (markdown)."""
    targets = [str(t) for t in results["config"]["targets"]]
    lines = [
        "| setting | arm | final acc | best acc | "
        + " | ".join(f"rounds to {t} per seed" for t in targets)
        + " | rounds to 0.8 x FedAvg (mean curve) | last gain (points) | mean alpha | skipped / reverted |",
        "|---|---|---|---|" + "---|" * len(targets) + "---|---|---|---|",
    ]
    for r in rows:
        to_level = "—" if r["to_level"] is None else str(r["to_level"])
        lines.append(
            f"| {r['setting']} | {r['arm']} | {r['final_mean']:.3f} ± {r['final_std']:.3f} | "
            f"{r['best_mean']:.3f} ± {r['best_std']:.3f} | "
            + " | ".join(_fmt_rounds(r["to_target"][t]) for t in targets)
            + f" | {to_level} | {r['last_gain']:+.1f} | {r['mean_alpha']:.3f} | {r['skipped']} / {r['reverted']} |"
        )
    return "\n".join(lines)


def write_markdown(results: dict[str, Any], path: Path, discussion: str = "") -> str:
    """Write the results tables (and the run facts) to ``path``; returns the main table."""
    cfg = results["config"]
    rows = summarize(results)
    table = results_table(results, rows)
    done = settings_with_runs(results)
    missing = [s for s in cfg["settings"] if s not in done]
    facts = (
        f"{len(done)} settings x {len(cfg['arms'])} arms x seeds {tuple(cfg['seeds'])}; {cfg['rounds']} rounds; "
        f"{cfg['devices']} devices, {cfg['devices_per_round']} per round; moving digits {cfg['train_per_class']} "
        f"train / {cfg['test_per_class']} test clips per class ({10 * cfg['test_per_class']} test clips); local "
        f"training {cfg['optimizer']} lr {cfg['lr']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}; "
        f"overrides {cfg['extra'] or 'none'}. Setting = devices / server data [/ data variant]: `dir0.1`, "
        "`dir0.5` = Dirichlet(0.1 / 0.5) label skew, `shards` = 2 labels per device; `iid5` = server holds 5% of "
        "the train split over all classes, `skew5` / `skew1` = 5% / 1% restricted to 3 classes; `shifted` = the "
        "blurrier, flatter, noisier camera of the moving-digits generator."
    )
    text = "\n".join(
        [
            "# FedDU / FedDUM study (moving digits)",
            "",
            f"Generated by `{results.get('command', 'python benchmarks/study_feddu.py')}`; raw curves in "
            f"`{path.stem}.json`, plot in `{path.stem}.png`. "
            "Method: `docs/feddu.md`.",
            "",
            facts,
            *([""] + [f"Not run (out of time): {', '.join(missing)}."] if missing else []),
            "",
            table,
            "",
            f'Final = mean test accuracy of the last {FINAL_WINDOW} rounds; mean ± std over seeds. "—" = never '
            "reached within the rounds. Mean alpha = alpha applied, averaged over rounds (0 for arms without a "
            "server update; 1 for the naive full pass).",
            "",
            "## Targets (skewed server data, means over seeds)",
            "",
            *check_targets(rows),
            "",
            f"Compute: {results['wall_seconds'] / 60:.0f} min on {results.get('cpus')} cores (sum of run times / "
            "workers).",
            "",
        ]
    )
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text + discussion)
    tmp.replace(path)
    return table


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Accuracy vs round (mean over seeds, min-max band) per arm, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    settings = settings_with_runs(results)
    cols = min(len(settings), 4)
    nrows = -(-len(settings) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False, sharey=True)
    for i, setting in enumerate(settings):
        ax = axes[i // cols][i % cols]
        for arm in _arms_of(results, setting):
            runs = _runs(results, setting, arm)
            length = min(len(r["test_accuracy"]) for r in runs)
            acc = np.stack([_curve(r)[:length] for r in runs])
            x = np.arange(1, length + 1)
            (line,) = ax.plot(x, np.nanmean(acc, axis=0), label=arm, linewidth=1.4)
            ax.fill_between(x, np.nanmin(acc, axis=0), np.nanmax(acc, axis=0), color=line.get_color(), alpha=0.12)
        for t in cfg["targets"]:
            ax.axhline(t, color="grey", linestyle=":", linewidth=1)
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("test accuracy (1,000 clips)")
    for j in range(len(settings), nrows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("FedDU study: mean over seeds, band = min..max", fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
