"""Study of recipe ``mutual``: does twin co-training beat single-network self-training?

Arms, each run through ``run_experiment`` on one embedded 2-CPU Ray, same data, same pre-training
per seed, same number of adaptation epochs and steps per network:

- ``baseline``: one network, k-means pseudo-labels from its own features, hard CE, no mean model;
- ``cross_l0.5``: cross pseudo-labelling: two twins, each labelled by a clustering of its peer's EMA
  features, hard CE, EMA per epoch with lambda = 0.5;
- ``cross_l0.9``: the same with lambda = 0.9;
- ``mmt``: MMT defaults: shared labels, soft CE + soft triplet (lambda_id 0.5, lambda_tri 0.8),
  label smoothing 0.1, EMA per iteration with alpha = 0.999.

Metrics per run: the final model's Hungarian accuracy on the target test split, and NMI / accuracy of
the pseudo-labels of the final clustering (after the last epoch) against the hidden labels, next to
the initial clustering (epoch 1, pre-trained features). Writes ``docs/results/mutual.md``,
``docs/results/mutual.png`` and ``docs/results/mutual.json``.

Run the full study on an otherwise idle machine (the report includes wall times)::

    python benchmarks/study_mutual.py
    python benchmarks/study_mutual.py --seeds 0 --set twin.adaptation.epochs=2 --out /tmp/smoke   # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.result_paths import portable  # noqa: E402
from fedtwin.orchestrator.config.loader import parse_set_option  # noqa: E402
from fedtwin.orchestrator.config.spec import ExperimentSpec  # noqa: E402
from fedtwin.orchestrator.run.experiment import run_experiment  # noqa: E402
from fedtwin.orchestrator.run.run_folder import RunFolder  # noqa: E402

ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"twin.networks": 1, "twin.loss.kind": "hard", "twin.ema.unit": "epoch", "twin.ema.momentum": 0.0},
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
    "mmt": {
        "twin.label_mode": "shared",
        "twin.loss.kind": "mmt",
        "twin.ema.unit": "iter",
        "twin.ema.momentum": 0.999,
        "twin.loss.lambda_id": 0.5,
        "twin.loss.lambda_tri": 0.8,
        "twin.loss.label_smoothing": 0.1,
        "twin.loss.use_triplet": True,
    },
}
METRICS = (
    "final_target_acc",
    "final_pseudo_nmi",
    "final_pseudo_acc",
    "initial_pseudo_nmi",
    "initial_pseudo_acc",
    "initial_target_acc",
)


def run_arm(base: ExperimentSpec, arm: str, seed: int, out: Path) -> dict[str, Any]:
    """One run; returns its summary plus its per-epoch pseudo-label NMI curve."""
    spec = base.with_overrides(
        {**ARMS[arm], "seed": seed, "name": f"mutual-{arm}-s{seed}", "run.output_dir": str(out / "runs")}
    )
    result = run_experiment(spec)
    records = RunFolder(result.run_dir).read_metrics()
    curve = [r["pseudo_nmi"] for r in records if r.get("phase") == "adapt"] + [result.summary["final_pseudo_nmi"]]
    return {
        "arm": arm,
        "seed": seed,
        "curve": curve,
        **{k: result.summary[k] for k in METRICS},
        "wall_seconds": result.summary["wall_seconds"],
        "run_dir": portable(result.run_dir),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: mean ± std over seeds per arm."""
    lines = [
        "| arm | final target acc | final pseudo NMI | final pseudo acc | initial pseudo NMI | "
        "initial pseudo acc | pre-trained target acc | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        cells = []
        for key in METRICS:
            values = np.array([r[key] for r in mine], dtype=float)
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        wall = np.mean([r["wall_seconds"] for r in mine])
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {wall:.0f} |")
    return "\n".join(lines)


def per_seed(rows: list[dict[str, Any]]) -> str:
    lines = ["| arm | seed | final target acc | final pseudo NMI | initial pseudo NMI |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['final_target_acc']:.3f} | {r['final_pseudo_nmi']:.3f} | "
            f"{r['initial_pseudo_nmi']:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
    for arm in arms:
        curves = np.array([r["curve"] for r in rows if r["arm"] == arm], dtype=float)
        x = np.arange(1, curves.shape[1] + 1)
        left.plot(x, curves.mean(axis=0), marker="o", markersize=3, label=arm)
    left.set_xlabel("clustering (epoch; last = after training)")
    left.set_ylabel("pseudo-label NMI (mean of seeds)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    width = 0.38
    for i, key in enumerate(("final_target_acc", "final_pseudo_nmi")):
        means = [np.mean([r[key] for r in rows if r["arm"] == a]) for a in arms]
        stds = [np.std([r[key] for r in rows if r["arm"] == a]) for a in arms]
        right.bar(np.arange(len(arms)) + (i - 0.5) * width, means, width, yerr=stds, capsize=3, label=key)
    right.set_xticks(np.arange(len(arms)), arms, fontsize=8)
    right.set_ylim(0, 1)
    right.grid(alpha=0.3, axis="y")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description="twin co-training study")
    parser.add_argument("--config", default=str(ROOT / "configs" / "mutual.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"), help="where mutual.md|png|json go")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp") / "study_mutual"
    base = ExperimentSpec.from_yaml(args.config, dict(parse_set_option(s) for s in args.overrides))
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    rows = []
    try:
        for seed in args.seeds:
            for arm in args.arms:
                row = run_arm(base, arm, seed, work)
                rows.append(row)
                print(
                    f"[{time.time() - started:6.0f}s] {arm:10s} seed {seed}: target acc {row['final_target_acc']:.3f}"
                    f"  pseudo NMI {row['initial_pseudo_nmi']:.3f} -> {row['final_pseudo_nmi']:.3f}",
                    flush=True,
                )
    finally:
        ray.shutdown()
    wall = time.time() - started
    plot(rows, out / "mutual.png")
    (out / "mutual.json").write_text(json.dumps({"wall_seconds": wall, "rows": rows}, indent=1))
    spec_text = yaml.safe_dump(base.to_dict()["twin"], sort_keys=False)
    (out / "mutual.md").write_text(
        f"# Study: twin co-training (recipe `mutual`)\n\n"
        f"Produced by `benchmarks/study_mutual.py` ({len(args.seeds)} seeds x {len(args.arms)} arms, "
        f"wall time {wall / 60:.1f} min on 2 CPU cores, one embedded Ray). Mean ± std over seeds.\n\n"
        f"{table(rows)}\n\n![study](mutual.png)\n\n## Per seed\n\n{per_seed(rows)}\n\n"
        f"## Base `twin` section (arms override it)\n\n```yaml\n{spec_text}```\n"
    )
    print(table(rows))
    print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
