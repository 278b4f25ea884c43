"""Study of recipe ``mutual``: does twin co-training beat one network, and how much of the gap to
supervision does it close?

Every arm is ``configs/mutual.yaml`` with the overrides in ``ARMS``, run through ``run_experiment`` on one
embedded 2-CPU Ray. Seed ``s`` sets ``seed`` and ``data.seed`` (its own source and target clips), so
within a seed every arm sees the same data and the same pre-trained networks (twin a's and twin b's
weights derive from the seed alone); arms are compared by paired per-seed differences.

- ``baseline``: the fair single network: pre-trains twin a's and twin b's networks exactly as the
  twins do and keeps the lower pre-training loss (``twin.pretrain.candidates: 2``), then k-means
  labels from its own live network, hard CE, no mean model;
- ``single_mt``: that network with its own EMA mean teacher and MMT's soft losses against it (MMT
  without the peer, ``twin.loss.teacher: self``): isolates the mutual part;
- ``twins_no_ema``: MMT with ``ema.momentum: 0`` (the mean models are the live networks, so each twin
  learns from its peer's live network): isolates the mean models;
- ``cross_l0.5`` / ``cross_l0.9``: cross pseudo-labelling, hard CE, per-epoch EMA lambda 0.5 / 0.9;
- ``mmt``: MMT defaults (shared labels, soft CE + soft triplet, EMA alpha 0.999 per step);
- ``oracle``: the baseline's network trained on the hidden target labels instead of pseudo-labels
  (``twin.adaptation.labels: oracle``): same model, views, optimiser and epochs;
- ``source-only`` needs no run: the kept pre-trained network's source classifier read on the target
  test split in the true label order (from the baseline's epoch 0).

Budgets. The recipe cannot stop on a criterion, so every run goes to ``--cap`` epochs (default 40) and
both budgets are read from its per-epoch records; each adaptation epoch is a fixed function of the
previous ones (constant learning rate, per-epoch seeds), so the value at epoch ``e`` is what a run with
``twin.adaptation.epochs: e`` ends with:

- ``fixed``: ``--fixed`` epochs (default 10, the shipped config);
- ``convergence``: the first epoch after which the pseudo-label NMI changed by less than 0.005 three
  times in a row, else the cap (reported as not converged). The oracle's labels never change, so its
  convergence value is its value at the cap. The cap of 40: with lambda 0.9 the mean model then keeps
  0.9^40 = 1.5% of the pre-trained weights (10 epochs kept 35%), and MMT's alpha = 0.999 mean has
  passed its warm-up (1,000 steps, about 21 epochs of 1,500 clips) by the same margin again.

At epoch ``e`` the target accuracy is that of the model the twins' rule keeps (the EMA model with the
lower training loss in epoch ``e``; at epoch 0 the candidate with the lower pre-training loss).

Every finished (arm, seed) is one JSON file under ``--work``/finished/, written atomically; a rerun of
the same command skips them. ``--report`` writes ``docs/results/mutual.md|json|png`` (``--out``) from the
finished runs only. Measured at full size on 2 cores (one seed, 3 epochs, then extrapolated to the cap):
about 25 s per run for data and pre-training, then 2.5 s per epoch for one network and 6.5-7.7 s for
twins, so about 2-2.5 min per single-network run and 5-5.5 min per twin run, about 28 min per seed and
3 h for the study on an otherwise idle machine::

    nice -n 19 python benchmarks/study_mutual.py --work /tmp/fedtwin-study-mutual      # hours; resumable
    python benchmarks/study_mutual.py --work /tmp/fedtwin-study-mutual --report       # the report so far
    python benchmarks/study_mutual.py --work /tmp/smoke --seeds 0 1 --cap 4 --fixed 2 \\
        --set data.generator.train_per_class=12 --set data.generator.test_per_class=6 --out /tmp/smoke/out
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.result_paths import portable  # noqa: E402
from fedtwin.orchestrator.config.loader import ConfigError, parse_set_option  # noqa: E402
from fedtwin.orchestrator.config.spec import ExperimentSpec  # noqa: E402
from fedtwin.pipelines.core.atomic_write import write_json_atomic, write_text_atomic  # noqa: E402

CONFIG = ROOT / "configs" / "mutual.yaml"
SINGLE = {"twin.networks": 1, "twin.pretrain.candidates": 2}
NO_MEAN = {"twin.loss.kind": "hard", "twin.ema.unit": "epoch", "twin.ema.momentum": 0.0}
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {**SINGLE, **NO_MEAN},
    "single_mt": {**SINGLE, "twin.loss.kind": "mmt", "twin.loss.teacher": "self"},
    "twins_no_ema": {"twin.ema.momentum": 0.0},
    "cross_l0.5": {
        "twin.label_mode": "cross",
        "twin.loss.kind": "hard",
        "twin.ema.unit": "epoch",
        "twin.ema.momentum": 0.5,
    },
    "cross_l0.9": {
        "twin.label_mode": "cross",
        "twin.loss.kind": "hard",
        "twin.ema.unit": "epoch",
        "twin.ema.momentum": 0.9,
    },
    "mmt": {},
    "oracle": {**SINGLE, **NO_MEAN, "twin.adaptation.labels": "oracle"},
}
BASE, ORACLE = "baseline", "oracle"
BUDGETS = ("fixed", "convergence")
NMI_TOL, NMI_TIMES = 0.005, 3


def run_one(arm: str, seed: int, settings: dict[str, Any], work: Path) -> dict[str, Any]:
    """One run to the cap; its per-epoch curves (index = epochs trained) and pre-training numbers."""
    from fedtwin.orchestrator.run.experiment import run_experiment
    from fedtwin.orchestrator.run.run_folder import RunFolder

    overrides = {
        **settings["set"],
        **ARMS[arm],
        "seed": seed,
        "data.seed": seed,
        "data.root": str(work / "data"),
        "run.output_dir": str(work / "runs"),
        "twin.adaptation.epochs": settings["cap"],
        "name": f"mutual-{arm}-s{seed}",
    }
    started = time.time()
    result = run_experiment(ExperimentSpec.from_yaml(CONFIG, overrides))
    records = RunFolder(result.run_dir).read_metrics()
    pre = next(r for r in records if r.get("phase") == "pretrain")
    adapt = [r for r in records if r.get("phase") == "adapt"]
    start = pre.get("pretrain_kept") or "ab"[_lower(pre, "pretrain_loss")]
    nets = "ab" if "loss_b" in adapt[0] else "a"
    accuracy = [pre[f"test_acc_{start}"]] + [r[f"test_acc_{nets[_lower(r, 'loss', nets)]}"] for r in adapt]
    return {
        "arm": arm,
        "seed": seed,
        "overrides": ARMS[arm],
        "run": portable(result.run_dir),
        "pretrain_kept": start,
        "source_only_acc": pre[f"source_only_target_accuracy_{start}"],
        # target_acc[e] / pseudo_nmi[e]: after e adaptation epochs (pseudo_nmi[e]: the clustering of the
        # mean models after e epochs; the last one is the final clustering)
        "target_acc": accuracy,
        "pseudo_nmi": [r["pseudo_nmi"] for r in adapt] + [result.summary["final_pseudo_nmi"]],
        "final_target_acc": result.summary["final_target_acc"],
        "seconds": round(time.time() - started, 1),
        "median_epoch_seconds": result.summary["median_epoch_seconds"],
    }


def _lower(record: dict[str, Any], key: str, nets: str = "ab") -> int:
    """Index of the network with the lower ``key`` (the twins' rule; NaN counts as not converged)."""
    values = [record.get(f"{key}_{n}", math.nan) for n in nets]
    return min(range(len(values)), key=lambda i: math.inf if math.isnan(values[i]) else values[i])


def converged_at(nmi: list[float], cap: int) -> tuple[int, bool]:
    """First epoch count after which NMI moved < NMI_TOL ``NMI_TIMES`` times in a row, else ``(cap, False)``."""
    for e in range(NMI_TIMES, len(nmi)):
        if all(abs(nmi[k] - nmi[k - 1]) < NMI_TOL for k in range(e - NMI_TIMES + 1, e + 1)):
            return e, True
    return cap, False


def at_budget(entry: dict[str, Any], budget: str, settings: dict[str, Any]) -> tuple[int, bool]:
    """(epoch, converged) at which ``budget`` reads this run."""
    if budget == "fixed":
        return settings["fixed"], True
    if entry["arm"] == ORACLE:
        return settings["cap"], False
    return converged_at(entry["pseudo_nmi"], settings["cap"])


def interval(diffs: list[float]) -> dict[str, Any]:
    """Mean and 95% Student t-interval of paired differences (NaN bounds under two pairs)."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": n}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def summarise(done: dict[tuple[str, int], dict[str, Any]], settings: dict[str, Any], arms: list[str]) -> dict:
    """The report's JSON: every per-seed list has its ``seeds`` list beside it."""
    seeds = settings["seeds"]
    base = {s: done[(BASE, s)] for s in seeds if (BASE, s) in done}
    out: dict[str, Any] = {
        "settings": {k: settings[k] for k in ("cap", "fixed", "seeds", "set")},
        "criterion": f"pseudo-label NMI changes < {NMI_TOL} for {NMI_TIMES} epochs in a row",
        "source_only": {"seeds": list(base), "target_acc": [e["source_only_acc"] for e in base.values()]},
        "arms": {},
        "missing": [f"{a} seed {s}" for s in seeds for a in arms if (a, s) not in done],
    }
    for arm in arms:
        runs = {s: done[(arm, s)] for s in seeds if (arm, s) in done}
        info: dict[str, Any] = {
            "overrides": ARMS[arm],
            "seeds": list(runs),
            "pretrain_kept": [e["pretrain_kept"] for e in runs.values()],
            "curves": {k: [e[k] for e in runs.values()] for k in ("target_acc", "pseudo_nmi")},
            "seconds": [e["seconds"] for e in runs.values()],
        }
        for budget in BUDGETS:
            points = {s: at_budget(e, budget, settings) for s, e in runs.items()}
            acc = {s: e["target_acc"][points[s][0]] for s, e in runs.items()}
            row: dict[str, Any] = {
                "seeds": list(runs),
                "epoch": [points[s][0] for s in runs],
                "converged": [points[s][1] for s in runs],
                "target_acc": list(acc.values()),
                "pseudo_nmi": [e["pseudo_nmi"][points[s][0]] for s, e in runs.items()],
            }
            paired = [s for s in runs if s in base]
            ref = {s: base[s]["target_acc"][at_budget(base[s], budget, settings)[0]] for s in paired}
            diffs = [acc[s] - ref[s] for s in paired]
            row["vs_baseline"] = {"seeds": paired, "diffs": diffs, **(interval(diffs) if diffs else {})}
            oracle = {s: done[(ORACLE, s)] for s in runs if (ORACLE, s) in done and s in base}
            gap_seeds = [
                s
                for s in oracle
                if oracle[s]["target_acc"][at_budget(oracle[s], budget, settings)[0]] > base[s]["source_only_acc"]
            ]
            shares = [
                (acc[s] - base[s]["source_only_acc"])
                / (oracle[s]["target_acc"][at_budget(oracle[s], budget, settings)[0]] - base[s]["source_only_acc"])
                for s in gap_seeds
            ]
            row["gap_closed"] = {"seeds": gap_seeds, "share": shares, **(interval(shares) if shares else {})}
            info[budget] = row
        out["arms"][arm] = info
    return out


def _cell(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f}" if values else "-"


def _ci(stats: dict[str, Any], sign: str = "+") -> str:
    """``mean [lo, hi]`` of an :func:`interval`; ``-`` without data."""
    if not stats.get("n"):
        return "-"
    if stats["n"] < 2:
        return f"{stats['mean']:{sign}.3f} (one seed)"
    return f"{stats['mean']:{sign}.3f} [{stats['lo']:{sign}.3f}, {stats['hi']:{sign}.3f}]"


def markdown(summary: dict[str, Any], command: str) -> str:
    st = summary["settings"]
    src = summary["source_only"]
    lines = [
        "# Study: twin co-training against one network (recipe `mutual`)",
        "",
        f"`{command}`: `configs/mutual.yaml`, every arm to {st['cap']} epochs, seeds {st['seeds']} (seed sets "
        "`seed` and `data.seed`: per seed every arm has the same clips and pre-training). Target accuracy is the "
        "Hungarian accuracy on the target test split of the model the twins' rule keeps. Differences are paired "
        "per seed against `baseline` (the fair single network), mean [95% t-interval]; gap closed = (arm - "
        "source-only) / (oracle - source-only) per seed, at the same budget.",
        "",
        f"Source-only (the kept pre-trained classifier, true label order): {_cell(src['target_acc'])} "
        f"(seeds {src['seeds']}).",
    ]
    for budget in BUDGETS:
        title = (
            f"{st['fixed']} epochs"
            if budget == "fixed"
            else f"to convergence ({summary['criterion']}; cap {st['cap']})"
        )
        lines += [
            "",
            f"## Budget: {title}",
            "",
            "| arm | seeds | target acc | pseudo NMI | epochs (mean) | vs baseline | gap closed |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm, info in summary["arms"].items():
            row = info[budget]
            epochs = f"{sum(row['epoch']) / len(row['epoch']):.1f}" if row["epoch"] else "-"
            unconverged = row["converged"].count(False) if budget == "convergence" and arm != ORACLE else 0
            lines.append(
                f"| {arm} | {len(row['seeds'])} | {_cell(row['target_acc'])} | {_cell(row['pseudo_nmi'])} | {epochs}"
                + (f" ({unconverged} hit the cap)" if unconverged else "")
                + f" | {'-' if arm == BASE else _ci(row['vs_baseline'])} | {_ci(row['gap_closed'], sign='')} |"
            )
    lines += [
        "",
        "![per-epoch curves and paired differences](mutual.png)",
        "",
        "## Per seed (target acc, fixed / convergence)",
        "",
    ]
    lines += ["| arm | " + " | ".join(f"seed {s}" for s in st["seeds"]) + " |", "|---|" + "---|" * len(st["seeds"])]
    for arm, info in summary["arms"].items():
        cells = {
            s: f"{f:.3f} / {c:.3f}"
            for s, f, c in zip(
                info["seeds"], info["fixed"]["target_acc"], info["convergence"]["target_acc"], strict=True
            )
        }
        lines.append(f"| {arm} | " + " | ".join(cells.get(s, "-") for s in st["seeds"]) + " |")
    if summary["missing"]:
        lines += ["", f"**Unfinished** ({len(summary['missing'])} runs): " + ", ".join(summary["missing"]) + "."]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    """Per-epoch target accuracy and pseudo-label NMI (mean thick, seeds thin); paired differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for i, (arm, info) in enumerate(summary["arms"].items()):
        for ax, key in zip(axes[:2], ("target_acc", "pseudo_nmi"), strict=True):
            curves = info["curves"][key]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            for c in curves:
                ax.plot(range(len(c)), c, color=f"C{i}", alpha=0.2, linewidth=0.7)
            mean = [sum(c[e] for c in curves) / len(curves) for e in range(n)]
            ax.plot(range(n), mean, color=f"C{i}", linewidth=1.8, label=f"{arm} ({len(curves)})")
    for ax, label in zip(axes[:2], ("target test accuracy (kept model)", "pseudo-label NMI"), strict=True):
        ax.axvline(summary["settings"]["fixed"], color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("adaptation epochs")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    arms = [a for a in summary["arms"] if a != BASE]
    for j, budget in enumerate(BUDGETS):
        for k, arm in enumerate(arms):
            stats = summary["arms"][arm][budget]["vs_baseline"]
            if not stats.get("n"):
                continue
            y = k + (j - 0.5) * 0.3
            lo, hi = stats["lo"], stats["hi"]
            if not math.isnan(lo):
                axes[2].plot([lo, hi], [y, y], color=f"C{j}", linewidth=2)
            axes[2].plot(stats["diffs"], [y] * len(stats["diffs"]), ".", color=f"C{j}", alpha=0.4)
            axes[2].plot([stats["mean"]], [y], "o", color=f"C{j}", label=budget if k == 0 else None)
    axes[2].axvline(0, color="black", linewidth=0.8)
    axes[2].set_yticks(range(len(arms)), arms, fontsize=8)
    axes[2].set_xlabel("target acc minus baseline, per seed (dots), mean and 95% t-interval")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3, axis="x")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def load_done(work: Path) -> dict[tuple[str, int], dict[str, Any]]:
    done = {}
    for path in sorted((work / "finished").glob("*.json")):
        entry = json.loads(path.read_text())
        done[(entry["arm"], entry["seed"])] = entry
    return done


def study_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every run of this ``--work`` shares; a rerun with other ones is refused (exit 2)."""
    settings = {
        "cap": args.cap,
        "fixed": args.fixed,
        "seeds": args.seeds,
        "set": dict(parse_set_option(s) for s in args.sets),
    }
    check = ExperimentSpec.from_yaml(CONFIG, {**settings["set"], "twin.adaptation.epochs": args.cap})
    del check  # validates --set before hours of work
    if not 1 <= args.fixed <= args.cap:
        raise ConfigError(f"--fixed {args.fixed}: must be between 1 and --cap ({args.cap})")
    path = args.work / "study.json"
    if path.exists():
        stored = json.loads(path.read_text())
        for key in ("cap", "fixed", "set"):
            if stored[key] != settings[key]:
                raise ConfigError(
                    f"--work {args.work}: holds runs with {key}={stored[key]!r}, "
                    f"not {settings[key]!r}; use another --work"
                )
    else:
        write_json_atomic(path, settings)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder: data, runs, finished/*.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="where mutual.md|json|png go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--cap", type=int, default=40, help="adaptation epochs of every run")
    parser.add_argument("--fixed", type=int, default=10, help="the fixed budget read from the curves")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="for every run (checks)"
    )
    parser.add_argument("--report", action="store_true", help="only write the report from finished runs")
    args = parser.parse_args(argv)
    try:
        settings = study_settings(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = load_done(args.work)
    pending = [(arm, seed) for seed in args.seeds for arm in args.arms if (arm, seed) not in done]
    if pending and not args.report:
        import ray

        logging.basicConfig(level=logging.WARNING)
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            for arm, seed in pending:  # all arms per seed, so a partial study stays paired
                try:
                    entry = run_one(arm, seed, settings, args.work)
                except Exception as err:  # noqa: BLE001 - one failed run must not end hours of study; rerun retries it
                    print(f"{arm:12s} seed {seed}: FAILED ({type(err).__name__}: {err}); rerun to retry", flush=True)
                    continue
                write_json_atomic(args.work / "finished" / f"{arm}__seed{seed}.json", entry)
                done[(arm, seed)] = entry
                print(
                    f"{arm:12s} seed {seed}: acc {entry['target_acc'][0]:.3f} -> {entry['target_acc'][-1]:.3f}, "
                    f"NMI {entry['pseudo_nmi'][0]:.3f} -> {entry['pseudo_nmi'][-1]:.3f} ({entry['seconds']:.0f} s)",
                    flush=True,
                )
        finally:
            ray.shutdown()
    command = "python benchmarks/study_mutual.py" + "".join(f" --set {s}" for s in args.sets)
    command += f" --seeds {' '.join(map(str, args.seeds))} --cap {args.cap} --fixed {args.fixed}"
    summary = summarise(done, settings, args.arms)
    summary["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "mutual.json", summary)
    text = markdown(summary, command)
    write_text_atomic(args.out / "mutual.md", text)
    plot(summary, args.out / "mutual.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
