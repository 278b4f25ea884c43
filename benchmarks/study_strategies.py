"""The federated baselines compared on the quickstart workload: FedAvg, FedAvgM, FedProx, SCAFFOLD,
FedAdam, FedDU and FedDUM, each with its lr tuned on a held-out seed, then over three seeds.

Workload: ``configs/fedavg.yaml`` (50 Dirichlet(0.5) devices, 20 per round, 3 local Adam epochs, 30
rounds, 1,000 test clips) run with ``resources.backend: local`` (the same hosts and strategies in one
process; results equal Ray's bit for bit on CPU). Each arm is its config (``configs/<arm>.yaml`` or
``fedavg.yaml --set strategy.name=...``) with its defaults.

1. Tuning, on the held-out seed 3 only: ``training.lr`` over {0.001, 0.003, 0.01} (FedAdam also over its
   ``server_lr`` in {0.01, 0.1}); the value with the best mean test accuracy over the last 5 rounds wins.
2. Evaluation: the chosen values on seeds 0, 1, 2 (``--set seed=N data.partition.seed=N``; seed 0 is
   the configs as committed), paired by seed.

Every finished run is saved at once under ``--work``/finished/ (one JSON file per run), and a rerun
of the same command skips them, so an interrupted study resumes where it stopped. ``--report``
writes ``docs/results/strategies.md|json|png`` from whatever has finished (the report lists what is
missing).

    nice -n 19 python benchmarks/study_strategies.py                 # everything, then the report
    python benchmarks/study_strategies.py --report                   # the report from finished runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.result_paths import portable  # noqa: E402
from fedtwin.orchestrator.config.spec import ExperimentSpec  # noqa: E402
from fedtwin.orchestrator.run.experiment import run_experiment  # noqa: E402
from fedtwin.orchestrator.run.run_folder import RunFolder  # noqa: E402
from fedtwin.pipelines.core.atomic_write import write_json_atomic, write_text_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
#: arm -> (config, overrides that make the arm)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "FedAvg": ("fedavg.yaml", {}),
    "FedAvgM": ("fedavg.yaml", {"strategy.name": "fedavgm"}),
    "FedProx": ("fedprox.yaml", {}),
    "SCAFFOLD": ("scaffold.yaml", {}),
    "FedAdam": ("fedadam.yaml", {}),
    "FedDU": ("quickstart.yaml", {}),
    "FedDUM": ("feddum.yaml", {}),
}
LRS = (0.001, 0.003, 0.01)
EXTRA_GRID: dict[str, dict[str, tuple[float, ...]]] = {"FedAdam": {"strategy.params.server_lr": (0.01, 0.1)}}
TUNE_SEED = 3
SEEDS = (0, 1, 2)
LAST = 5  # rounds averaged for the tuning score
TARGET = 0.8
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95% Student t


def grid(arm: str) -> list[dict[str, float]]:
    """The tuning grid of ``arm``: lr, times the arm's extra axes."""
    axes = {"training.lr": LRS, **EXTRA_GRID.get(arm, {})}
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def tag(values: dict[str, float]) -> str:
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v:g}" for k, v in values.items())


#: ``--set KEY=VALUE`` of a check of this script (e.g. ``federation.num_rounds=2``); empty for the study
EXTRA: dict[str, Any] = {}


def run_one(arm: str, seed: int, values: dict[str, float], work: Path) -> dict[str, Any]:
    """One run; its per-round test accuracy and the derived numbers."""
    config, arm_overrides = ARMS[arm]
    overrides: dict[str, Any] = {
        "data.root": str(work / "data"),
        "run.output_dir": str(work / "runs"),
        "resources.backend": "local",
        **arm_overrides,
        **values,
        **EXTRA,
    }
    if seed != 0:
        overrides.update({"seed": seed, "data.partition.seed": seed})
    started = time.time()
    result = run_experiment(ExperimentSpec.from_yaml(CONFIGS / config, overrides))
    records = RunFolder(result.run_dir).read_metrics()
    curve = [r["test_accuracy"] for r in records if r.get("test_accuracy") is not None]
    reach = next((r["round"] for r in records if (r.get("test_accuracy") or 0) >= TARGET), None)
    return {
        "arm": arm,
        "seed": seed,
        "values": values,
        "config": f"configs/{config}",
        "overrides": {k: v for k, v in arm_overrides.items()},
        "run": portable(result.run_dir),
        "test_accuracy": curve,
        "final": curve[-1],
        "last_mean": sum(curve[-LAST:]) / len(curve[-LAST:]),
        "rounds_to_target": reach,
        "seconds": round(time.time() - started, 1),
    }


def key(arm: str, seed: int, values: dict[str, float]) -> str:
    return f"{arm}__seed{seed}__{tag(values)}"


def load_done(work: Path) -> dict[str, dict[str, Any]]:
    done = {}
    for path in sorted((work / "finished").glob("*.json")):
        entry = json.loads(path.read_text())
        done[key(entry["arm"], entry["seed"], entry["values"])] = entry
    return done


def ensure(arm: str, seed: int, values: dict[str, float], work: Path, done: dict[str, dict[str, Any]]) -> dict:
    k = key(arm, seed, values)
    if k not in done:
        entry = run_one(arm, seed, values, work)
        write_json_atomic(work / "finished" / f"{k}.json", entry)
        done[k] = entry
        print(
            f"{arm:9s} seed {seed} {tag(values):28s} final {entry['final']:.3f} ({entry['seconds']:.0f}s)", flush=True
        )
    return done[k]


def chosen(arm: str, done: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """The grid point with the best last-rounds mean on the tuning seed (None until all have run)."""
    scores = [(done.get(key(arm, TUNE_SEED, v)), v) for v in grid(arm)]
    if any(entry is None for entry, _ in scores):
        return None
    return max(scores, key=lambda item: item[0]["last_mean"])[1]


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of paired differences."""
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = T_975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def report(done: dict[str, dict[str, Any]], out: Path, command: str) -> None:
    """docs/results/strategies.md|json|png from the finished runs."""
    summary: dict[str, Any] = {"command": command, "tuning_seed": TUNE_SEED, "seeds": list(SEEDS), "arms": {}}
    missing: list[str] = []
    for arm in ARMS:
        tuning = [
            {"values": v, "seed": TUNE_SEED, "last_mean": done[key(arm, TUNE_SEED, v)]["last_mean"]}
            for v in grid(arm)
            if key(arm, TUNE_SEED, v) in done
        ]
        pick = chosen(arm, done)
        per_seed = {}
        if pick is None:
            missing.append(f"{arm}: tuning ({len(tuning)}/{len(grid(arm))} runs)")
        else:
            for seed in SEEDS:
                entry = done.get(key(arm, seed, pick))
                if entry is None:
                    missing.append(f"{arm}: seed {seed}")
                    continue
                per_seed[str(seed)] = {
                    k: entry[k] for k in ("seed", "final", "last_mean", "rounds_to_target", "test_accuracy", "run")
                }
        summary["arms"][arm] = {
            "config": f"configs/{ARMS[arm][0]}",
            "overrides": ARMS[arm][1],
            "tuning": tuning,
            "chosen": pick,
            "per_seed": per_seed,
        }
    summary["missing"] = missing
    base = summary["arms"]["FedAvg"]["per_seed"]
    lines = [
        "# Federated baselines on the quickstart workload",
        "",
        f"`{command}`: `configs/fedavg.yaml`'s workload (50 Dirichlet(0.5) devices, 20 per round, 3 local Adam "
        "epochs, 30 rounds, 1,000 test clips: one standard error of an accuracy is about 0.01) on the in-process "
        f"backend. Each arm's `training.lr` (FedAdam: also `server_lr`) was chosen on the held-out seed {TUNE_SEED} "
        f"by the mean test accuracy of the last {LAST} rounds; the table is seeds {', '.join(map(str, SEEDS))}.",
        "",
        f"| arm | chosen on seed {TUNE_SEED} | final accuracy per seed (0 / 1 / 2) | mean | vs FedAvg, paired "
        f"(95% t-interval) | rounds to {TARGET} per seed |",
        "|---|---|---|---|---|---|",
    ]
    for arm, info in summary["arms"].items():
        seeds = info["per_seed"]
        finals = [seeds[str(s)]["final"] if str(s) in seeds else None for s in SEEDS]
        done_finals = [f for f in finals if f is not None]
        mean = f"{sum(done_finals) / len(done_finals):.3f}" if done_finals else "-"
        pairs = [seeds[str(s)]["final"] - base[str(s)]["final"] for s in SEEDS if str(s) in seeds and str(s) in base]
        if arm == "FedAvg" or not pairs:
            versus = "-"
        else:
            m, lo, hi = interval(pairs)
            versus = f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" if len(pairs) > 1 else f"{m:+.3f} (one seed)"
        reach = [seeds[str(s)]["rounds_to_target"] if str(s) in seeds else "-" for s in SEEDS]
        lines.append(
            f"| {arm} | {tag(info['chosen']) if info['chosen'] else 'tuning unfinished'} | "
            + " / ".join("-" if f is None else f"{f:.3f}" for f in finals)
            + f" | {mean} | {versus} | "
            + " / ".join("never" if r is None else str(r) for r in reach)
            + " |"
        )
    lines += ["", "Tuning runs (seed 3, mean of the last 5 rounds):", ""]
    for arm, info in summary["arms"].items():
        cells = ", ".join(f"{tag(t['values'])}: {t['last_mean']:.3f}" for t in info["tuning"])
        lines.append(f"- {arm}: {cells or 'none yet'}")
    if missing:
        lines += ["", "**Unfinished** (the study is still running or was stopped): " + "; ".join(missing) + "."]
    lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "strategies.json", summary)
    write_text_atomic(out / "strategies.md", "\n".join(lines))
    _plot(summary, out / "strategies.png")
    print("\n".join(lines))


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (arm, info) in enumerate(summary["arms"].items()):
        curves = [s["test_accuracy"] for s in info["per_seed"].values()]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = [sum(c[r] for c in curves) / len(curves) for r in range(n)]
        color = f"C{i}"
        for c in curves:
            ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(range(1, n + 1), mean, color=color, label=f"{arm} ({len(curves)} seeds)")
    ax.axhline(TARGET, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title("Quickstart workload: mean over seeds (thin: each seed)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fedtwin-study-strategies"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--report", action="store_true", help="only write the report from finished runs")
    parser.add_argument("--set", dest="sets", nargs="*", default=[], help="KEY=VALUE for every run (checks only)")
    args = parser.parse_args(argv)
    import yaml

    EXTRA.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.sets)})
    done = load_done(args.work)
    command = "python benchmarks/study_strategies.py" + "".join(f" --set {s}" for s in args.sets)
    if not args.report:
        for arm in args.arms:  # tuning first: every arm's grid on the held-out seed
            for values in grid(arm):
                ensure(arm, TUNE_SEED, values, args.work, done)
        for seed in SEEDS:  # then the seeds, all arms per seed, so a partial study stays paired
            for arm in args.arms:
                pick = chosen(arm, done)
                if pick is not None:
                    ensure(arm, seed, pick, args.work, done)
    report(done, args.out, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
