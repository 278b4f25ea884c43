"""Study: online transfer arms (fine-tune, replay, A-GEM, SimMix, SimMix + bank update).

Every arm starts from the same meta-model and the same history bank (pre-trained once per seed) and
sees the same new-scene sessions, the same transfer batches and the same history batches; the arms
differ only in the ``transfer.mixing`` / ``transfer.bank.update`` settings of ``configs/transfer.yaml``.
The study runs the recipe's own :class:`actors.transfer.trainer.TransferTrainer` in this process (no
Ray: one trainer at a time is what the recipe runs too), built from specs through
``orchestrator.recipes.transfer.recipe.trainer_settings`` exactly as ``fedtwin run`` builds them.

Writes ``docs/results/transfer.md`` (table, mean ± std over seeds, the study's targets checked) and
``docs/results/transfer.png`` (accuracies per session; the similarity trace of SimMix), plus the raw
numbers in ``docs/results/transfer.json``. Run the full study on an otherwise idle machine (the
report includes wall times)::

    python benchmarks/study_transfer.py
    python benchmarks/study_transfer.py --smoke --out /tmp/study   # seconds, for development
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.transfer.trainer import TransferTrainer
from orchestrator.config.spec import ExperimentSpec
from orchestrator.run.data_prep import ensure_generated
from orchestrator.recipes.transfer.recipe import target_generator, trainer_settings
from pipelines.core.atomic_write import write_json_atomic, write_text_atomic, write_with

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "transfer.yaml"
ARMS: dict[str, dict[str, Any]] = {
    "fine-tune": {"transfer.mixing.mode": "finetune", "transfer.bank.update": False},
    "replay (w_h = 0.5)": {"transfer.mixing.mode": "replay", "transfer.bank.update": False},
    "A-GEM": {"transfer.mixing.mode": "agem", "transfer.bank.update": False},
    "SimMix": {"transfer.mixing.mode": "simmix", "transfer.bank.update": False},
    "SimMix + bank update": {"transfer.mixing.mode": "simmix", "transfer.bank.update": True},
}
SMOKE = {
    "data.generator.train_per_class": 30, "data.generator.test_per_class": 10, "transfer.pretrain.epochs": 1,
    "transfer.stream.sessions": 2, "transfer.stream.clips_per_session": 20, "transfer.bank.size": 50,
    "transfer.training.epochs": 1,
}
METRICS = ("new_scene_accuracy", "source_accuracy", "forgetting", "harmonic_mean", "similarity_mean")


def run_seed(seed: int, data_root: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Pre-train once, then run every arm from the same snapshot; per-arm session records and traces."""
    base = ExperimentSpec.from_yaml(CONFIG, {"seed": seed, "data.seed": seed, "data.root": str(data_root), **extra})
    source = ensure_generated(data_root, base.data.generator, base.data.seed)
    target = ensure_generated(data_root, target_generator(base), base.data.seed + base.transfer.stream.data_seed_offset)
    started = time.perf_counter()
    meta_trainer = TransferTrainer(str(source), str(target), trainer_settings(base))
    meta_record = meta_trainer.pretrain()
    snapshot = meta_trainer.snapshot()
    print(f"seed {seed}: meta-model source {meta_record['source_accuracy']:.3f} new scene "
          f"{meta_record['new_scene_accuracy']:.3f} ({time.perf_counter() - started:.0f}s)", flush=True)
    out: dict[str, Any] = {"meta": meta_record, "arms": {}}
    for arm, overrides in ARMS.items():
        started = time.perf_counter()
        trainer = TransferTrainer(str(source), str(target), trainer_settings(base.with_overrides(overrides)))
        trainer.restore(snapshot)
        records, traces = [], []
        for session in range(1, base.transfer.stream.sessions + 1):
            record, trace = trainer.run_session(session)
            records.append(record)
            traces.extend(row["s"] for row in trace)
        last = records[-1]
        print(f"  {arm:<22} new {last['new_scene_accuracy']:.3f} source {last['source_accuracy']:.3f} "
              f"hm {last['harmonic_mean']:.3f} s {last['similarity_mean']:+.2f} ({time.perf_counter() - started:.0f}s)",
              flush=True)
        out["arms"][arm] = {"records": records, "s_trace": traces}
    return out


def aggregate(results: dict[int, dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std over seeds of each arm's final-session metrics."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for arm in ARMS:
        finals = [res["arms"][arm]["records"][-1] for res in results.values()]
        table[arm] = {m: (float(np.mean([f[m] for f in finals])), float(np.std([f[m] for f in finals])))
                      for m in METRICS}
    return table


def check_targets(table: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    """The study's targets, each stated with the measured numbers."""
    ft = table["fine-tune"]
    best_hm = max(table, key=lambda arm: table[arm]["harmonic_mean"][0])
    lines = []
    for arm in ("SimMix", "SimMix + bank update"):
        row = table[arm]
        gap = 100 * (ft["new_scene_accuracy"][0] - row["new_scene_accuracy"][0])
        lines += [
            f"- {arm}: new-scene accuracy {100 * row['new_scene_accuracy'][0]:.1f}% vs fine-tune "
            f"{100 * ft['new_scene_accuracy'][0]:.1f}% (gap {gap:+.1f} points; target <= 2): "
            f"{'met' if gap <= 2 else 'NOT met'}",
            f"- {arm}: forgetting {100 * row['forgetting'][0]:.1f} points vs fine-tune "
            f"{100 * ft['forgetting'][0]:.1f}: {'met' if row['forgetting'][0] < ft['forgetting'][0] else 'NOT met'}",
        ]
    lines.append(f"- best harmonic mean: {best_hm} ({table[best_hm]['harmonic_mean'][0]:.3f}); target: a SimMix arm: "
                 f"{'met' if best_hm.startswith('SimMix') else 'NOT met'}")
    return lines


def write_report(out: Path, results: dict[int, dict[str, Any]], seconds: float, spec: ExperimentSpec) -> None:
    table = aggregate(results)
    t = spec.transfer
    header = "| arm | new-scene acc | source acc | forgetting | harmonic mean | mean s |"
    rows = [header, "|---|---|---|---|---|---|"]
    for arm, row in table.items():
        cells = [f"{100 * row[m][0]:.1f} ± {100 * row[m][1]:.1f}" for m in METRICS[:4]]
        rows.append(f"| {arm} | " + " | ".join(cells) + f" | {row['similarity_mean'][0]:+.3f} |")
    meta_src = np.mean([r["meta"]["source_accuracy"] for r in results.values()])
    meta_new = np.mean([r["meta"]["new_scene_accuracy"] for r in results.values()])
    text = "\n".join([
        "# Online transfer study",
        "",
        f"`python benchmarks/study_transfer.py` — seeds {sorted(results)}, wall time {seconds:.0f} s on this "
        f"machine ({torch.get_num_threads()} torch thread).",
        "",
        f"Setup (`configs/transfer.yaml`): meta-model `{spec.model.arch}` pre-trained {t.pretrain.epochs} epochs on "
        f"{10 * spec.data.generator.train_per_class} clean clips (source accuracy {100 * meta_src:.1f}%, "
        f"new-scene accuracy {100 * meta_new:.1f}% before transfer); new scene = shift "
        f"(blur {t.stream.shift.blur_sigma}, contrast {t.stream.shift.contrast}, noise {t.stream.shift.noise_std}); "
        f"{t.stream.sessions} sessions x {t.stream.clips_per_session} clips, {t.training.epochs} epochs each, "
        f"batch {t.training.batch_size} + history batch {t.training.history_batch_size or t.training.batch_size}, "
        f"Adam lr {t.training.lr}; bank {t.bank.size} clips ({t.bank.policy}, per-class quota). "
        "Every arm starts from the same meta-model and bank and sees the same batches.",
        "",
        "Final session, mean ± std over seeds (accuracies and forgetting in %; forgetting = meta-model source "
        "accuracy minus final source accuracy):",
        "",
        *rows,
        "",
        "Targets of the study (means of the seeds):",
        "",
        *check_targets(table),
        "",
        "![transfer study](transfer.png)",
        "",
    ])
    write_text_atomic(out / "transfer.md", text)
    write_json_atomic(out / "transfer.json", {"seconds": seconds, "table": table, "results": {
        str(seed): {"meta": res["meta"], "arms": {a: v["records"] for a, v in res["arms"].items()}}
        for seed, res in results.items()}})
    _plot(out / "transfer.png", results)


def _plot(path: Path, results: dict[int, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for arm in ARMS:
        per_seed = [[r["new_scene_accuracy"] for r in res["arms"][arm]["records"]] for res in results.values()]
        src = [[r["source_accuracy"] for r in res["arms"][arm]["records"]] for res in results.values()]
        sessions = np.arange(1, len(per_seed[0]) + 1)
        axes[0].plot(sessions, np.mean(per_seed, axis=0), marker="o", label=arm)
        axes[1].plot(sessions, np.mean(src, axis=0), marker="o", label=arm)
    first = results[min(results)]["arms"]["SimMix"]["s_trace"]
    axes[2].plot(np.arange(1, len(first) + 1), first, lw=0.8)
    axes[2].axhline(0.0, color="grey", lw=0.6)
    for ax, title in zip(axes, ("new-scene accuracy", "source accuracy (forgetting)",
                                f"SimMix cosine s per step (seed {min(results)})")):
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("session")
    axes[1].set_xlabel("session")
    axes[2].set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--smoke", action="store_true", help="tiny data and sessions (seconds), for development")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = SMOKE if args.smoke else {}
    data_root = Path(tempfile.mkdtemp(prefix="study-transfer-")) if args.smoke else args.data_root
    started = time.perf_counter()
    results = {seed: run_seed(seed, data_root, extra) for seed in args.seeds}
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    spec = ExperimentSpec.from_yaml(CONFIG, extra)
    write_report(args.out, results, seconds, spec)
    print(f"wrote {args.out / 'transfer.md'} in {seconds:.0f}s")


if __name__ == "__main__":
    main()
