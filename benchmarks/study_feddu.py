"""Reproduction study of FedDU/FedDUM on moving digits.

Four settings: non-IID devices (``shards`` with 2 labels per device, or ``dirichlet`` with alpha 0.1)
times server data of about 5% of the device data that is either IID over all classes or skewed to
half of the classes. Four arms per setting: FedAvg, the naive "always a full server pass"
(FedDU with ``fixed_alpha: 1``), FedDU and FedDUM, each with default parameters, plus a supplementary
FedDU with C = 3; 3 seeds, the same rounds, devices and local training. Every run is a real
``run_experiment`` (device hosts, the server node, the strategy classes, ``local_train``), by default
with ``resources.backend: local`` in two worker processes (``--backend ray``: one shared Ray instance).

Outputs ``docs/results/feddu.md`` (table), ``docs/results/feddu.png`` (accuracy and alpha_t per
round) and ``docs/results/feddu.json`` (raw per-round curves; ``--render-only`` rebuilds the table
and plot from it).

    python benchmarks/study_feddu.py            # full study (on an otherwise idle machine)
    python benchmarks/study_feddu.py --rounds 4 --seeds 0 --settings shards/skewed --out /tmp/s   # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.study_feddu_report import write_markdown, write_plot  # noqa: E402
from orchestrator.config.spec import ExperimentSpec  # noqa: E402
from orchestrator.run.data_prep import ensure_partition  # noqa: E402
from orchestrator.run.experiment import run_experiment  # noqa: E402
from orchestrator.run.run_folder import RunFolder  # noqa: E402

#: Partition of the device data, per setting family.
DEVICE_SPLITS: dict[str, dict[str, Any]] = {
    "shards": {"scheme": "shards", "labels_per_device": 2},
    "dirichlet": {"scheme": "dirichlet", "alpha": 0.1, "min_size": 5},
}
#: Server data: IID over all 10 classes, or restricted to 5 classes (as in the FedDU papers).
SERVER_SPLITS: dict[str, dict[str, Any]] = {"iid": {"shared_classes": None}, "skewed": {"shared_classes": 5}}
#: The arms, as strategy sections; defaults everywhere else (docs/feddu.md).
ARMS: dict[str, dict[str, Any]] = {
    "FedAvg": {"name": "fedavg", "params": {}},
    "naive full pass": {"name": "feddu", "params": {"fixed_alpha": 1.0}},
    "FedDU": {"name": "feddu", "params": {}},
    "FedDUM": {"name": "feddum", "params": {}},
    # Supplementary, not one of the arms the study's targets compare: a larger C raises small alphas.
    "FedDU C=3": {"name": "feddu", "params": {"C": 3.0}},
}


@dataclass(frozen=True)
class StudyConfig:
    """The shared budget of every run (same for all arms)."""

    rounds: int = 40
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[str, ...] = ("shards/iid", "shards/skewed", "dirichlet/iid", "dirichlet/skewed")
    arms: tuple[str, ...] = tuple(ARMS)
    target: float = 0.3
    train_per_class: int = 200
    test_per_class: int = 20
    digit_size: int = 24  # larger, noise-free digits: the tiny model learns within the round budget
    noise_std: float = 0.0
    devices: int = 100  # the reference's 100 devices, 10 per round
    devices_per_round: int = 10
    shared_fraction: float = 0.0476  # n0 / n_devices = 0.0476 / 0.9524 = 5%
    epochs: int = 2
    batch_size: int = 10  # the reference's B
    optimizer: str = "sgd"  # the reference's plain SGD (FedDUM's device momentum is SGD momentum)
    lr: float = 0.05
    work_dir: str = "/tmp/fedtwin-study-feddu"
    backend: str = "local"  # resources.backend of every run: "local" (in-process) or "ray"
    workers: int = 2  # parallel worker processes with the local backend (one per core)
    extra: dict[str, Any] = field(default_factory=dict)  # dotted overrides applied to every run


def arm_spec(cfg: StudyConfig, setting: str, arm: str, seed: int) -> ExperimentSpec:
    """The experiment of one (setting, arm, seed)."""
    devices, server = setting.split("/")
    partition = {"devices": cfg.devices, "seed": seed, "shared_fraction": cfg.shared_fraction,
                 **DEVICE_SPLITS[devices], **SERVER_SPLITS[server]}
    spec = {
        "name": f"{setting.replace('/', '-')}-{arm.replace(' ', '-')}-s{seed}",
        "seed": seed,
        "data": {"root": f"{cfg.work_dir}/data",
                 "generator": {"train_per_class": cfg.train_per_class, "test_per_class": cfg.test_per_class,
                               "digit_size": cfg.digit_size, "noise_std": cfg.noise_std},
                 "partition": partition},
        "training": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "lr": cfg.lr},
        "federation": {"num_rounds": cfg.rounds, "devices_per_round": cfg.devices_per_round,
                       "round_timeout_s": 600, "target_accuracy": cfg.target},
        "strategy": ARMS[arm],
        "resources": {"hosts": 2, "cpus_per_host": 1, "backend": cfg.backend},
        "run": {"output_dir": f"{cfg.work_dir}/runs", "checkpoint_every": cfg.rounds, "keep_checkpoints": 1},
    }
    return ExperimentSpec.from_dict(spec).with_overrides(cfg.extra)


def run_one(cfg: StudyConfig, setting: str, arm: str, seed: int) -> dict[str, Any]:
    """One run through ``run_experiment``; returns its per-round curves."""
    t0 = time.time()
    result = run_experiment(arm_spec(cfg, setting, arm, seed))
    records = RunFolder(result.run_dir).read_metrics()
    return {
        "setting": setting, "arm": arm, "seed": seed,
        "test_accuracy": [r.get("test_accuracy") for r in records],
        "alpha_t": [r.get("alpha_applied") for r in records],
        "skipped": sum(bool(r.get("skipped")) for r in records),
        "reverted": sum(bool(r.get("reverted")) for r in records),
        "rounds_to_target": result.summary["rounds_to_target"],
        "wall_seconds": time.time() - t0,
        "run_dir": str(result.run_dir),
    }


def run_study(cfg: StudyConfig, log: Any = print) -> dict[str, Any]:
    """Run every (setting, seed, arm) on ``cfg.workers`` processes; returns the raw per-round curves.

    With ``backend: local`` each worker process runs whole experiments in-process (the same hosts,
    server node, strategies and round loop as on Ray, without actor start-up, which would otherwise
    cost more than the training in runs this short); with ``ray`` runs go one at a time on one shared
    local Ray instance.
    """
    jobs = [(s, arm, seed) for s in cfg.settings for seed in cfg.seeds for arm in cfg.arms]
    # Generate the data and partitions once, before workers race for them (the file locks would cope).
    for setting in cfg.settings:
        for seed in cfg.seeds:
            ensure_partition(arm_spec(cfg, setting, cfg.arms[0], seed).data)
    started = time.time()
    runs: list[dict[str, Any]] = []

    def report(run: dict[str, Any]) -> None:
        runs.append(run)
        elapsed, i = time.time() - started, len(runs)
        log(f"[{i:2d}/{len(jobs)}] {run['setting']:17s} {run['arm']:15s} seed {run['seed']}: final "
            f"{run['test_accuracy'][-1]:.3f}, target@{run['rounds_to_target']}, {run['wall_seconds']:.0f}s "
            f"(elapsed {elapsed / 60:.1f} min, eta {elapsed / i * (len(jobs) - i) / 60:.1f} min)")

    if cfg.backend == "ray" or cfg.workers == 1:
        if cfg.backend == "ray":
            import ray

            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        for job in jobs:
            report(run_one(cfg, *job))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=context) as pool:
            futures = [pool.submit(run_one, cfg, *job) for job in jobs]
            for future in as_completed(futures):
                report(future.result())
    runs.sort(key=lambda r: (cfg.settings.index(r["setting"]), r["seed"], cfg.arms.index(r["arm"])))
    return {"config": asdict(cfg), "runs": runs, "wall_seconds": time.time() - started,
            "cpus": os.cpu_count(), "load_average_end": list(os.getloadavg())}


def parse_args(argv: list[str] | None = None) -> tuple[StudyConfig, argparse.Namespace]:
    """Command line: budget overrides, subsets of settings/arms, output folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--settings", nargs="+", choices=StudyConfig.settings)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS))
    parser.add_argument("--target", type=float)
    parser.add_argument("--work-dir")
    parser.add_argument("--backend", choices=["local", "ray"])
    parser.add_argument("--workers", type=int)
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override for every run, e.g. --set training.lr=0.1")
    parser.add_argument("--out", default="docs/results", help="folder for feddu.md/.png/.json")
    parser.add_argument("--render-only", action="store_true", help="rebuild table and plot from OUT/feddu.json")
    args = parser.parse_args(argv)
    from orchestrator.config.loader import parse_set_option

    changes: dict[str, Any] = {k: v for k, v in {
        "rounds": args.rounds, "target": args.target, "work_dir": args.work_dir,
        "backend": args.backend, "workers": args.workers,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "settings": tuple(args.settings) if args.settings else None,
        "arms": tuple(args.arms) if args.arms else None,
    }.items() if v is not None}
    if args.extra:
        changes["extra"] = dict(parse_set_option(s) for s in args.extra)
    return StudyConfig(**changes), args


def main(argv: list[str] | None = None) -> int:
    """Run (or re-render) the study and write the outputs."""
    cfg, args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / "feddu.json"
    if args.render_only:
        results = json.loads(raw_path.read_text())
    else:
        logging.basicConfig(level=logging.WARNING)
        print(f"FedDU study: {len(cfg.settings)} settings x {len(cfg.arms)} arms x {len(cfg.seeds)} seeds, "
              f"{cfg.rounds} rounds each", flush=True)
        results = run_study(cfg, log=lambda line: print(line, flush=True))
        tmp = raw_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, raw_path)
    table = write_markdown(results, out / "feddu.md")
    write_plot(results, out / "feddu.png")
    print(table)
    print(f"wrote {out / 'feddu.md'}, {out / 'feddu.png'}, {raw_path} ({results['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
