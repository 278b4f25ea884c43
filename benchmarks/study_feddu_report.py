"""Table and plot of the FedDU study (``benchmarks/study_feddu.py``) from its raw per-round curves.

Definitions used in the table:

- *final accuracy*: the mean test accuracy over the last ``FINAL_WINDOW`` rounds of a run (single
  rounds of non-IID federated training oscillate), then mean +- std over seeds;
- *rounds to target*: the first round whose test accuracy reaches the target, per seed ("—" = never);
- *speed-up vs FedAvg*: per seed, FedAvg's rounds to target divided by the arm's, then the median over
  seeds. A run that never reaches the target counts as ``rounds + 1`` (a bound, marked with ``*``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FINAL_WINDOW = 5


def _runs(results: dict[str, Any], setting: str, arm: str) -> list[dict[str, Any]]:
    return sorted((r for r in results["runs"] if r["setting"] == setting and r["arm"] == arm), key=lambda r: r["seed"])


def _final(run: dict[str, Any]) -> float:
    accs = [a for a in run["test_accuracy"] if a is not None]
    return float(np.mean(accs[-FINAL_WINDOW:]))


def _rounds(run: dict[str, Any], cap: int) -> tuple[int, bool]:
    """(rounds to target, censored?)"""
    r = run["rounds_to_target"]
    return (cap + 1, True) if r is None else (int(r), False)


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (setting, arm) with the table's numbers."""
    cfg = results["config"]
    cap = int(cfg["rounds"])
    rows = []
    for setting in cfg["settings"]:
        baseline = {r["seed"]: _rounds(r, cap) for r in _runs(results, setting, "FedAvg")}
        for arm in cfg["arms"]:
            runs = _runs(results, setting, arm)
            if not runs:
                continue
            finals = [_final(r) for r in runs]
            rounds = [_rounds(r, cap) for r in runs]
            ratios, censored = [], False
            for run, (n, cut) in zip(runs, rounds, strict=True):
                if run["seed"] in baseline:
                    base, base_cut = baseline[run["seed"]]
                    ratios.append(base / n)
                    censored |= cut or base_cut
            rows.append({
                "setting": setting,
                "arm": arm,
                "final_mean": float(np.mean(finals)),
                "final_std": float(np.std(finals)),
                "rounds": [None if cut else n for n, cut in rounds],
                "median_rounds": statistics.median(n for n, _ in rounds),
                "median_rounds_censored": any(cut for _, cut in rounds),
                "speedup": statistics.median(ratios) if ratios else None,
                "speedup_censored": censored,
                "skipped": sum(r["skipped"] for r in runs),
                "reverted": sum(r["reverted"] for r in runs),
            })
    return rows


def check_targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The study's targets in each skewed-server setting, one line each with the numbers."""
    lines = []
    by = {(r["setting"], r["arm"]): r for r in rows}
    for setting in sorted({r["setting"] for r in rows if r["setting"].endswith("/skewed")}):
        fedavg, feddu, naive = (by.get((setting, a)) for a in ("FedAvg", "FedDU", "naive full pass"))
        if not (fedavg and feddu):
            continue
        ratio = feddu["median_rounds"] / fedavg["median_rounds"]
        drop = 100 * (fedavg["final_mean"] - feddu["final_mean"])
        checks = [
            (f"median rounds to target FedDU/FedAvg = {feddu['median_rounds']:g}/{fedavg['median_rounds']:g} = "
             f"{ratio:.2f} (target <= 0.7)", ratio <= 0.7),
            (f"final accuracy FedDU - FedAvg = {-drop:+.1f} points (target >= -0.5)", drop <= 0.5),
        ]
        if naive:
            checks.append((f"FedDU median rounds {feddu['median_rounds']:g} vs naive {naive['median_rounds']:g} "
                           "(target: not slower)", feddu["median_rounds"] <= naive["median_rounds"]))
        for text, ok in checks:
            lines.append(f"- `{setting}`: {text}: **{'met' if ok else 'missed'}**")
    return lines


def _fmt_rounds(rounds: Sequence[int | None]) -> str:
    return ", ".join("—" if n is None else str(n) for n in rounds)


def write_markdown(results: dict[str, Any], path: Path) -> str:
    """Write the results table (and the run facts) to ``path``; returns the table text."""
    cfg = results["config"]
    rows = summarize(results)
    lines = [
        "| setting (devices / server data) | arm | final acc (mean ± std) | rounds to "
        f"{cfg['target']:.2f} per seed | median speed-up vs FedAvg | skipped / reverted rounds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        speed = "—" if r["speedup"] is None else f"{r['speedup']:.2f}x" + ("*" if r["speedup_censored"] else "")
        lines.append(
            f"| {r['setting']} | {r['arm']} | {r['final_mean']:.3f} ± {r['final_std']:.3f} | {_fmt_rounds(r['rounds'])} "
            f"| {speed} | {r['skipped']} / {r['reverted']} |"
        )
    table = "\n".join(lines)
    facts = (
        f"{len(cfg['settings'])} settings x {len(cfg['arms'])} arms x seeds {cfg['seeds']}; {cfg['rounds']} rounds; "
        f"{cfg['devices']} devices, {cfg['devices_per_round']} per round; moving digits {cfg['train_per_class']} "
        f"train / {cfg['test_per_class']} test clips per class; server data = shared_fraction "
        f"{cfg['shared_fraction']} of the train split (about 5% of the device data); local training {cfg['optimizer']} lr "
        f"{cfg['lr']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}; overrides {cfg['extra'] or 'none'}."
    )
    text = "\n".join([
        "# FedDU / FedDUM reproduction study (moving digits)",
        "",
        "Generated by `benchmarks/study_feddu.py`; raw curves in `feddu.json`, plot in `feddu.png`. "
        "Method and definitions: `docs/feddu.md`.",
        "",
        facts,
        "",
        table,
        "",
        f"Final accuracy = mean test accuracy of the last {FINAL_WINDOW} rounds. \"—\" = target never reached; "
        "such runs count as rounds + 1 in medians and speed-ups (marked `*`, a bound).",
        "",
        "## Study targets (skewed server data)",
        "",
        *check_targets(rows),
        "",
        f"Wall time of the whole study: {results['wall_seconds'] / 60:.1f} min on {results.get('cpus')} cores "
        f"(load average at the end: {', '.join(f'{x:.1f}' for x in results.get('load_average_end', []))}).",
        "",
        "`FedDU C=3` is a supplementary arm (a larger C raises small alphas); the study's targets use "
        "FedDU with defaults. Discussion of these numbers: `docs/feddu.md`, section \"Study results\".",
        "",
    ])
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text + results.get("notes", ""))
    tmp.replace(path)
    return table


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Accuracy vs round (mean over seeds, min-max band) per arm and setting, plus FedDU's alpha_t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    settings = cfg["settings"]
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]})
    for col, setting in enumerate(settings):
        ax, ax_alpha = axes[0][col], axes[1][col]
        for arm in cfg["arms"]:
            runs = _runs(results, setting, arm)
            if not runs:
                continue
            acc = np.array([[np.nan if a is None else a for a in r["test_accuracy"]] for r in runs], dtype=float)
            x = np.arange(1, acc.shape[1] + 1)
            line, = ax.plot(x, np.nanmean(acc, axis=0), label=arm)
            ax.fill_between(x, np.nanmin(acc, axis=0), np.nanmax(acc, axis=0), color=line.get_color(), alpha=0.15)
            if any(a is not None for r in runs for a in r["alpha_t"]):
                alpha = np.array([[np.nan if a is None else a for a in r["alpha_t"]] for r in runs], dtype=float)
                ax_alpha.plot(x, np.nanmean(alpha, axis=0), color=line.get_color(), label=arm)
        ax.axhline(cfg["target"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(setting.replace("/", " devices / server ") + " data", fontsize=9)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax_alpha.set_xlabel("round")
        ax_alpha.set_ylabel("alpha applied")
        ax_alpha.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
