"""Study: online transfer arms (fine-tune, replay, A-GEM, SimMix, SimMix + bank update).

Every arm runs twice: with plain SGD (momentum 0) at one learning rate for all arms, chosen on
fine-tune's new-scene accuracy from ``--lrs`` (the mixing rules hold for the step only under SGD), and
with the shipped Adam settings (a secondary table). Every arm starts from the same meta-model and the
same history bank (pre-trained once per seed) and sees the same new-scene sessions, the same transfer
batches and the same history batches; the arms
differ only in the ``transfer.mixing`` / ``transfer.bank.update`` settings of ``configs/transfer.yaml``.
The study runs the recipe's own :class:`fedtwin.actors.transfer.trainer.TransferTrainer` in this process (no
Ray: one trainer at a time is what the recipe runs too), given the spec's sections exactly as
``fedtwin run`` gives them.

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

from fedtwin.actors.transfer.trainer import TransferTrainer
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.transfer.recipe import target_generator
from fedtwin.orchestrator.run.data_prep import ensure_generated
from fedtwin.pipelines.core.atomic_write import write_json_atomic, write_text_atomic, write_with

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
    "data.generator.train_per_class": 30,
    "data.generator.test_per_class": 10,
    "transfer.pretrain.epochs": 1,
    "transfer.stream.sessions": 2,
    "transfer.stream.clips_per_session": 20,
    "transfer.bank.size": 50,
    "transfer.training.epochs": 1,
}
METRICS = ("new_scene_accuracy", "source_accuracy", "forgetting", "harmonic_mean", "similarity_mean")


#: Candidate SGD learning rates; the study picks the one with the best fine-tune new-scene accuracy.
SGD_LRS = (0.001, 0.003, 0.01)


def new_trainer(spec: ExperimentSpec, source: str, target: str) -> TransferTrainer:
    """The trainer ``fedtwin run`` starts for ``spec``: the same sections, seed and threads."""
    return TransferTrainer(source, target, spec.transfer, spec.model, spec.seed, spec.resources.torch_threads)


def prepare_seed(seed: int, data_root: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Data and the meta-model of one seed (pre-trained once; every arm restores this snapshot)."""
    base = ExperimentSpec.from_yaml(CONFIG, {"seed": seed, "data.seed": seed, "data.root": str(data_root), **extra})
    source = ensure_generated(data_root, base.data.generator, base.data.seed)
    target = ensure_generated(data_root, target_generator(base), base.data.seed + base.transfer.stream.data_seed_offset)
    started = time.perf_counter()
    meta_trainer = new_trainer(base, str(source), str(target))
    meta_record = meta_trainer.pretrain()
    print(
        f"seed {seed}: meta-model source {meta_record['source_accuracy']:.3f} new scene "
        f"{meta_record['new_scene_accuracy']:.3f} ({time.perf_counter() - started:.0f}s)",
        flush=True,
    )
    return {
        "base": base,
        "source": str(source),
        "target": str(target),
        "snapshot": meta_trainer.snapshot(),
        "meta": meta_record,
    }


def run_arm(prep: dict[str, Any], overrides: dict[str, Any], label: str) -> dict[str, Any]:
    """All sessions of one arm from the seed's meta-model; its per-session records and SimMix trace."""
    started = time.perf_counter()
    trainer = new_trainer(prep["base"].with_overrides(overrides), prep["source"], prep["target"])
    trainer.restore(prep["snapshot"])
    records, traces = [], []
    for session in range(1, prep["base"].transfer.stream.sessions + 1):
        record, trace = trainer.run_session(session)
        records.append(record)
        traces.extend(row["s"] for row in trace)
    last = records[-1]
    print(
        f"  {label:<34} new {last['new_scene_accuracy']:.3f} source {last['source_accuracy']:.3f} "
        f"hm {last['harmonic_mean']:.3f} s {last['similarity_mean']:+.2f} ({time.perf_counter() - started:.0f}s)",
        flush=True,
    )
    return {"records": records, "s_trace": traces}


def run_study(seeds: list[int], data_root: Path, extra: dict[str, Any], lrs: tuple[float, ...]) -> dict[str, Any]:
    """SGD arms at the learning rate chosen on fine-tune, then the Adam arms of configs/transfer.yaml."""
    preps = {seed: prepare_seed(seed, data_root, extra) for seed in seeds}
    sgd = {"transfer.training.optimizer": "sgd", "transfer.training.momentum": 0.0}
    lr_search: dict[str, dict[int, dict[str, Any]]] = {}
    for lr in lrs:
        lr_search[str(lr)] = {
            seed: run_arm(
                prep, {**ARMS["fine-tune"], **sgd, "transfer.training.lr": lr}, f"seed {seed} sgd lr {lr} fine-tune"
            )
            for seed, prep in preps.items()
        }
    lr_score = {
        lr: float(np.mean([r["records"][-1]["new_scene_accuracy"] for r in runs.values()]))
        for lr, runs in lr_search.items()
    }
    best_lr = max(lr_score, key=lr_score.__getitem__)
    print(f"SGD lr chosen on fine-tune: {best_lr} (new-scene accuracy by lr: {lr_score})", flush=True)
    out: dict[str, Any] = {"sgd_lr": float(best_lr), "lr_score": lr_score, "optimizers": {}}
    for name, opt in (("sgd", {**sgd, "transfer.training.lr": float(best_lr)}), ("adam", {})):
        per_seed = {}
        for seed, prep in preps.items():
            arms = {}
            for arm, overrides in ARMS.items():
                if name == "sgd" and arm == "fine-tune":
                    arms[arm] = lr_search[best_lr][seed]
                else:
                    arms[arm] = run_arm(prep, {**overrides, **opt}, f"seed {seed} {name} {arm}")
            per_seed[seed] = {"meta": prep["meta"], "arms": arms}
        out["optimizers"][name] = per_seed
    return out


def aggregate(results: dict[int, dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std over seeds of each arm's final-session metrics."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for arm in ARMS:
        finals = [res["arms"][arm]["records"][-1] for res in results.values()]
        table[arm] = {
            m: (float(np.mean([f[m] for f in finals])), float(np.std([f[m] for f in finals]))) for m in METRICS
        }
    return table


def paired_hm(results: dict[int, dict[str, Any]], a: str, b: str) -> tuple[float, float]:
    """Mean and std over seeds of arm a's minus arm b's final harmonic mean (points)."""
    diffs = [
        100 * (res["arms"][a]["records"][-1]["harmonic_mean"] - res["arms"][b]["records"][-1]["harmonic_mean"])
        for res in results.values()
    ]
    return float(np.mean(diffs)), float(np.std(diffs))


def check_targets(table: dict[str, dict[str, tuple[float, float]]], results: dict[int, dict[str, Any]]) -> list[str]:
    """The study's targets, each stated with the measured numbers."""
    ft = table["fine-tune"]
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
    for rival in ("replay (w_h = 0.5)", "A-GEM"):
        mean, std = paired_hm(results, "SimMix", rival)
        verdict = "beats" if mean > std else ("loses to" if -mean > std else "ties (inside the seed spread)")
        lines.append(
            f"- harmonic mean SimMix - {rival}: {mean:+.1f} ± {std:.1f} points (paired by seed): "
            f"SimMix {verdict} {rival}"
        )
    return lines


def _table(results: dict[int, dict[str, Any]]) -> list[str]:
    table = aggregate(results)
    rows = ["| arm | new-scene acc | source acc | forgetting | harmonic mean | mean s |", "|---|---|---|---|---|---|"]
    for arm, row in table.items():
        cells = [f"{100 * row[m][0]:.1f} ± {100 * row[m][1]:.1f}" for m in METRICS[:4]]
        rows.append(f"| {arm} | " + " | ".join(cells) + f" | {row['similarity_mean'][0]:+.3f} |")
    return rows


def write_report(out: Path, study: dict[str, Any], seconds: float, spec: ExperimentSpec) -> None:
    sgd, adam = study["optimizers"]["sgd"], study["optimizers"]["adam"]
    t = spec.transfer
    meta_src = np.mean([r["meta"]["source_accuracy"] for r in sgd.values()])
    meta_new = np.mean([r["meta"]["new_scene_accuracy"] for r in sgd.values()])
    lr_line = ", ".join(f"lr {lr}: {100 * acc:.1f}%" for lr, acc in study["lr_score"].items())
    text = "\n".join(
        [
            "# Online transfer study",
            "",
            f"`python benchmarks/study_transfer.py` — seeds {sorted(sgd)}, wall time {seconds:.0f} s on this "
            f"machine ({torch.get_num_threads()} torch thread).",
            "",
            f"Setup (`configs/transfer.yaml`): meta-model `{spec.model.arch}` "
            f"pre-trained {t.pretrain.epochs} epochs on "
            f"{10 * spec.data.generator.train_per_class} clean clips (source accuracy {100 * meta_src:.1f}%, "
            f"new-scene accuracy {100 * meta_new:.1f}% before transfer); new scene = shift "
            f"(blur {t.stream.shift.blur_sigma}, contrast {t.stream.shift.contrast}, "
            f"noise {t.stream.shift.noise_std}); "
            f"{t.stream.sessions} sessions x {t.stream.clips_per_session} clips, {t.training.epochs} epochs each, "
            f"batch {t.training.batch_size} + history batch {t.training.history_batch_size or t.training.batch_size}; "
            f"bank {t.bank.size} clips ({t.bank.policy}, per-class quota). Every arm starts from the same meta-model "
            "and bank and sees the same batches.",
            "",
            "Final session, mean ± std over seeds (accuracies and forgetting in %; forgetting = meta-model source "
            "accuracy minus final source accuracy).",
            "",
            f"## Plain SGD (the mixing rules as stated: the step is the mixed gradient times lr {study['sgd_lr']})",
            "",
            f"One learning rate for every arm, chosen on fine-tune's final new-scene accuracy (mean over seeds: "
            f"{lr_line}); momentum 0.",
            "",
            *_table(sgd),
            "",
            "Targets (means of the seeds):",
            "",
            *check_targets(aggregate(sgd), sgd),
            "",
            f"## Adam (secondary; `configs/transfer.yaml` as shipped, lr {t.training.lr})",
            "",
            "Adam rescales each coordinate and keeps momentum, so the step it takes is not the mixed gradient: "
            "A-GEM's guarantee (the step does not raise the history loss to first order) and SimMix's weights "
            "do not hold for the step. This table shows what the shipped recipe does, not a test of the rules.",
            "",
            *_table(adam),
            "",
            *check_targets(aggregate(adam), adam),
            "",
            "![transfer study](transfer.png)",
            "",
        ]
    )
    write_text_atomic(out / "transfer.md", text)
    write_json_atomic(
        out / "transfer.json",
        {
            "seconds": seconds,
            "sgd_lr": study["sgd_lr"],
            "lr_score": study["lr_score"],
            "tables": {name: aggregate(res) for name, res in study["optimizers"].items()},
            "results": {
                name: {
                    str(seed): {"meta": r["meta"], "arms": {a: v["records"] for a, v in r["arms"].items()}}
                    for seed, r in res.items()
                }
                for name, res in study["optimizers"].items()
            },
        },
    )
    _plot(out / "transfer.png", sgd, adam)


def _plot(path: Path, sgd: dict[int, dict[str, Any]], adam: dict[int, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for row, (name, results) in enumerate((("SGD", sgd), ("Adam", adam))):
        for arm in ARMS:
            per_seed = [[r["new_scene_accuracy"] for r in res["arms"][arm]["records"]] for res in results.values()]
            src = [[r["source_accuracy"] for r in res["arms"][arm]["records"]] for res in results.values()]
            sessions = np.arange(1, len(per_seed[0]) + 1)
            axes[row][0].plot(sessions, np.mean(per_seed, axis=0), marker="o", label=arm)
            axes[row][1].plot(sessions, np.mean(src, axis=0), marker="o", label=arm)
        first = results[min(results)]["arms"]["SimMix"]["s_trace"]
        axes[row][2].plot(np.arange(1, len(first) + 1), first, lw=0.8)
        axes[row][2].axhline(0.0, color="grey", lw=0.6)
        for ax, title in zip(
            axes[row],
            ("new-scene accuracy", "source accuracy (forgetting)", f"SimMix cosine s per step (seed {min(results)})"),
        ):
            ax.set_title(f"{name}: {title}")
            ax.grid(alpha=0.3)
        axes[row][0].set_xlabel("session")
        axes[row][1].set_xlabel("session")
        axes[row][2].set_xlabel("step")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(SGD_LRS), help="SGD learning rates to choose from")
    parser.add_argument("--smoke", action="store_true", help="tiny data and sessions (seconds), for development")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = SMOKE if args.smoke else {}
    data_root = Path(tempfile.mkdtemp(prefix="study-transfer-")) if args.smoke else args.data_root
    started = time.perf_counter()
    study = run_study(args.seeds, data_root, extra, tuple(args.lrs))
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    spec = ExperimentSpec.from_yaml(CONFIG, extra)
    write_report(args.out, study, seconds, spec)
    print(f"wrote {args.out / 'transfer.md'} in {seconds:.0f}s")


if __name__ == "__main__":
    main()
