"""Study: class-incremental methods at one byte budget on motion-dependent moving digits.

Every arm is the real ``incremental`` recipe (``configs/incremental.yaml`` on Ray) with only
``incremental.method`` changed, so all arms share the data, the class order per seed, the model, the
training settings and ``memory_budget_bytes``:

- ``finetune``: no memory, CE on the new task (lower bound);
- ``replay``: full-clip memory, CE;
- ``replay_kd``: full-clip memory, CE + old-class logit distillation (iCaRL-style);
- ``ours``: key-frame memory, CE + L_sf + alpha * L_tf (spatio-temporal distillation);
- ``ours_no_temporal``: ``ours`` without L_tf.

Writes ``docs/results/incremental.md`` (table, per-seed numbers, targets) and ``incremental.png``.
Run the full study on an otherwise idle machine (the report includes wall times)::

    python benchmarks/study_incremental.py

Smoke run: ``python benchmarks/study_incremental.py --seeds 0 --set incremental.tasks=2 --out /tmp/x``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.result_paths import portable  # noqa: E402
from fedtwin.orchestrator.config.loader import parse_set_option  # noqa: E402
from fedtwin.orchestrator.config.spec import ExperimentSpec  # noqa: E402
from fedtwin.orchestrator.run.experiment import run_experiment  # noqa: E402
from fedtwin.orchestrator.run.run_folder import RunFolder  # noqa: E402
from fedtwin.pipelines.core.atomic_write import write_text_atomic, write_with  # noqa: E402

ARMS = ("finetune", "replay", "replay_kd", "ours", "ours_no_temporal")
COLUMNS = (  # (summary key, header, format)
    ("final_accuracy", "final acc", "{:.3f}"),
    ("average_incremental_accuracy", "AIA", "{:.3f}"),
    ("first_task_forgetting", "forget (task 1)", "{:.3f}"),
    ("average_forgetting", "avg forget", "{:.3f}"),
    ("backward_transfer", "BWT", "{:+.3f}"),
    ("memory_bytes", "memory bytes", "{:,.0f}"),
    ("memory_clips", "stored clips", "{:.0f}"),
    ("mean_keyframes_per_clip", "frames/clip", "{:.2f}"),
    ("wall_seconds", "run s", "{:.0f}"),
)


def run_arm(base: ExperimentSpec, arm: str, seed: int, work: Path) -> dict[str, Any]:
    """One (arm, seed) run of the real recipe; returns its summary plus the seen-accuracy curve."""
    spec = base.with_overrides(
        {
            "name": f"{arm}-s{seed}",
            "seed": seed,
            "data.seed": seed,
            "incremental.method": arm,
            "run.output_dir": str(work / "runs"),
        }
    )
    result = run_experiment(spec)
    curve = [r["seen_accuracy"] for r in RunFolder(result.run_dir).read_metrics()]
    print(
        f"  {arm:17s} seed {seed}: final {result.summary['final_accuracy']:.3f} "
        f"forget {result.summary['first_task_forgetting']:.3f} "
        f"frames/clip {result.summary['mean_keyframes_per_clip'] or 0:.2f} "
        f"({result.summary['wall_seconds']:.0f} s)",
        flush=True,
    )
    paths = {"run_dir": portable(result.run_dir), "dataset": portable(result.summary.get("dataset"))}
    return {**result.summary, **paths, "arm": arm, "seed": seed, "seen_curve": curve}


def aggregate(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation over seeds of every table column, per arm."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        out[arm] = {}
        for key, _, _ in COLUMNS:
            values = np.array([float(r.get(key) or 0.0) for r in mine])
            out[arm][key] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return out


def targets(stats: dict[str, dict[str, tuple[float, float]]], frames: int) -> list[tuple[str, bool, str]]:
    """The study's targets on the seed means: (statement, met, numbers)."""
    needed = {"ours", "finetune", "replay", "replay_kd"}
    if not needed <= set(stats):
        return []
    f = {a: stats[a]["first_task_forgetting"][0] for a in needed}
    acc = {a: stats[a]["final_accuracy"][0] for a in needed}
    kf = stats["ours"]["mean_keyframes_per_clip"][0]
    return [
        ("ours forgets less than fine-tune", f["ours"] < f["finetune"], f"{f['ours']:.3f} vs {f['finetune']:.3f}"),
        (
            "ours forgets less than replay + logit KD",
            f["ours"] < f["replay_kd"],
            f"{f['ours']:.3f} vs {f['replay_kd']:.3f}",
        ),
        (
            "ours reaches the final accuracy of full-clip replay",
            acc["ours"] >= acc["replay"],
            f"{acc['ours']:.3f} vs {acc['replay']:.3f}",
        ),
        (f"ours stores fewer than T={frames} frames per clip", kf < frames, f"{kf:.2f}"),
    ]


def write_markdown(
    path: Path,
    runs: list[dict[str, Any]],
    arms: list[str],
    base: ExperimentSpec,
    seeds: list[int],
    wall: float,
    overrides: dict[str, Any],
) -> None:
    """The results page: setup, mean ± std table, targets, per-seed numbers."""
    stats = aggregate(runs, arms)
    inc, gen = base.incremental, base.data.generator
    lines = [
        "# Class-incremental study",
        "",
        f"Generated by `benchmarks/study_incremental.py` in {wall / 60:.1f} min of wall time "
        f"({len(runs)} runs, seeds {seeds}). Every arm runs the real `incremental` recipe on Ray from "
        "`configs/incremental.yaml`, changing only `incremental.method`"
        + (f" (study overrides: `{json.dumps(overrides)}`)" if overrides else "")
        + ".",
        "",
        f"Setup: {gen.num_classes} classes = {gen.digit_groups} digit groups x {gen.motion_classes} directions "
        f"({gen.train_per_class} train / {gen.test_per_class} test clips per class, T={gen.frames}, "
        f"{gen.size}x{gen.size}); {inc.tasks} tasks, {inc.epochs_per_task} epochs per task "
        f"({inc.first_task_epochs or inc.epochs_per_task} for the first); model `{base.model.arch}`; "
        f"memory budget {inc.memory.budget_bytes:,} bytes for every arm with memory; key frames with "
        f"rho={inc.memory.keyframe_rho}; alpha={inc.loss.alpha}, distill_weight={inc.loss.distill_weight}, "
        f"kd_weight={inc.loss.kd_weight}; balanced CE={inc.loss.balanced_ce}. The seed sets the data, the class order "
        "and the initial weights.",
        "",
        "Mean ± standard deviation over seeds. Forget (task 1) = accuracy on the first task right after "
        "learning it minus after the last task; final acc = accuracy on all classes after the last task.",
        "",
        "| method | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for arm in arms:
        cells = [
            f"{fmt.format(stats[arm][k][0])} ± {fmt.format(stats[arm][k][1]).lstrip('+')}"
            if k not in ("memory_bytes", "wall_seconds")
            else fmt.format(stats[arm][k][0])
            for k, _, fmt in COLUMNS
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    checks = targets(stats, gen.frames)
    if checks:
        lines += ["", "Targets (seed means):", ""]
        lines += [f"- {'met' if ok else 'NOT met'}: {text} ({nums})" for text, ok, nums in checks]
    lines += [
        "",
        "Per seed (final acc / forget task 1 / frames per clip):",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for arm in arms:
        cells = []
        for s in seeds:
            r = next((r for r in runs if r["arm"] == arm and r["seed"] == s), None)
            cells.append(
                "-"
                if r is None
                else f"{r['final_accuracy']:.3f} / {r['first_task_forgetting']:.3f} / "
                f"{r['mean_keyframes_per_clip'] or 0:.2f}"
            )
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    write_text_atomic(path, "\n".join(lines) + "\n")


def plot(path: Path, runs: list[dict[str, Any]], arms: list[str]) -> None:
    """Seen-class accuracy after each task (mean ± std band) and first-task forgetting per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(runs, arms)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for arm in arms:
        curves = np.array([r["seen_curve"] for r in runs if r["arm"] == arm])
        x = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(axis=0), curves.std(axis=0)
        ax1.plot(x, mean, marker="o", label=arm)
        ax1.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax1.set_xlabel("after task")
    ax1.set_ylabel("accuracy on all seen classes")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    means = [stats[a]["first_task_forgetting"][0] for a in arms]
    errs = [stats[a]["first_task_forgetting"][1] for a in arms]
    ax2.bar(range(len(arms)), means, yerr=errs, color="tab:gray")
    ax2.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
    ax2.set_ylabel("forgetting of task 1 (lower is better)")
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "incremental.yaml"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (one CPU each)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"), help="folder for incremental.md|png")
    parser.add_argument("--work", default="/tmp/fedtwin-study-incremental", help="data and run folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import ray

    overrides = dict(parse_set_option(s) for s in args.overrides)
    work = Path(args.work)
    base = ExperimentSpec.from_yaml(args.config, {"data.root": str(work / "data"), **overrides})
    started = time.time()
    ray.init(num_cpus=max(2, args.parallel), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    print(f"study_incremental: {len(jobs)} runs, {args.parallel} at a time", flush=True)
    try:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            runs = list(pool.map(lambda job: run_arm(base, job[0], job[1], work), jobs))
    finally:
        ray.shutdown()
    wall = time.time() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_markdown(out / "incremental.md", runs, args.arms, base, args.seeds, wall, overrides)
    plot(out / "incremental.png", runs, args.arms)
    raw = [{k: v for k, v in r.items() if k != "versions"} for r in runs]
    write_text_atomic(out / "incremental.json", json.dumps({"wall_seconds": wall, "runs": raw}, indent=1) + "\n")
    print(f"wrote {out / 'incremental.md'} in {wall:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
