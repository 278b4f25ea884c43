"""The FedDU study: FedAvg, FedAvgM, the naive full server pass, FedDU (C = 1 and 3) and FedDUM.

Settings ``devices/server[/variant]``: devices Dirichlet(0.1), Dirichlet(0.5) or 2-label shards;
server data 5% of the train split over all classes (``iid5``) or restricted to 3 classes at 5% and 1%
(``skew5``, ``skew1``); the optional variant ``shifted`` uses the generator's blurrier camera. The
workload is the quickstart's recipe (tiny3d, Adam, 50 devices, 20 per round) with a 1,000-clip test
split. Every run is a real ``run_experiment`` (device hosts, the server node, the strategy classes,
``local_train``), by default with ``resources.backend: local`` in two worker processes (``--backend
ray``: one shared Ray instance). Each finished run is saved to ``feddu.json`` at once; ``--continue``
runs only what is missing.

Outputs ``docs/results/feddu.md`` (tables, targets), ``docs/results/feddu.png`` (accuracy per round,
one panel per setting) and ``docs/results/feddu.json`` (raw per-round curves; ``--render-only``
rebuilds the tables and plot from it).

    python benchmarks/study_feddu.py            # full study (on an otherwise idle machine)
    python benchmarks/study_feddu.py --continue # finish an interrupted study
    python benchmarks/study_feddu.py --rounds 3 --seeds 0 --settings dir0.5/skew5 --arms FedAvg FedDU --out /tmp/s
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.result_paths import portable  # noqa: E402
from benchmarks.study_feddu_report import write_markdown, write_plot  # noqa: E402
from fedtwin.orchestrator.config.spec import ExperimentSpec  # noqa: E402
from fedtwin.orchestrator.run.data_prep import ensure_partition  # noqa: E402
from fedtwin.orchestrator.run.experiment import run_experiment  # noqa: E402
from fedtwin.orchestrator.run.run_folder import RunFolder  # noqa: E402

#: Partition of the device data: the first part of a setting's name.
DEVICE_SPLITS: dict[str, dict[str, Any]] = {
    "dir0.1": {"scheme": "dirichlet", "alpha": 0.1, "min_size": 5},
    "dir0.5": {"scheme": "dirichlet", "alpha": 0.5, "min_size": 5},
    "shards": {"scheme": "shards", "labels_per_device": 2},
}
#: Server data (share of the train split held by the server, and the classes it covers): the second part.
#: "skew" data covers 3 of the 10 classes (chosen by the partition seed).
SERVER_SPLITS: dict[str, dict[str, Any]] = {
    "iid5": {"shared_fraction": 0.05, "shared_classes": None},
    "skew5": {"shared_fraction": 0.05, "shared_classes": 3},
    "skew1": {"shared_fraction": 0.01, "shared_classes": 3},
}
#: Data variants: an optional third part (generator overrides on top of the default moving digits).
VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    "shifted": {"shift": {}},  # blurrier, flatter, noisier camera (MovingDigitsConfig.shift defaults)
}
#: The arms, as strategy sections; defaults everywhere else (docs/feddu.md).
ARMS: dict[str, dict[str, Any]] = {
    "FedAvg": {"name": "fedavg", "params": {}},
    # Server momentum 0.9 with server lr 0.1: an effective step of 1, as recommended by Hsu et al.
    "FedAvgM": {"name": "fedavgm", "params": {"server_momentum": 0.9, "server_lr": 0.1}},
    "naive full pass": {"name": "feddu", "params": {"fixed_alpha": 1.0}},
    "FedDU": {"name": "feddu", "params": {}},
    "FedDU C=3": {"name": "feddu", "params": {"C": 3.0}},
    # beta_s 0.5: FedDUM's default when the study ran (now 0.3, chosen later on held-out seeds:
    # docs/results/feddum_momentum.md); pinned so that --continue and reruns match the committed runs.
    "FedDUM": {"name": "feddum", "params": {"momentum": 0.5}},
}
#: Every setting of the full study, headline first: all device x server splits, plus the headline with shifted data.
ALL_SETTINGS: tuple[str, ...] = (
    "dir0.5/skew5",
    "dir0.1/skew5",
    "dir0.5/skew1",
    "shards/skew5",
    "dir0.5/iid5",
    "dir0.5/skew5/shifted",
    "dir0.1/skew1",
    "dir0.1/iid5",
    "shards/skew1",
    "shards/iid5",
)


@dataclass(frozen=True)
class StudyConfig:
    """The shared budget of every run (same for all arms): the quickstart's workload (configs/fedavg.yaml)."""

    rounds: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[str, ...] = ALL_SETTINGS
    arms: tuple[str, ...] = tuple(ARMS)
    # Run only in the headline setting (the first of ``settings``), to fit the study in a session's compute.
    headline_only_arms: tuple[str, ...] = ("FedAvgM", "FedDU C=3")
    targets: tuple[float, ...] = (0.6, 0.8)
    train_per_class: int = 200
    test_per_class: int = 100  # 1,000 test clips
    devices: int = 50
    devices_per_round: int = 20
    epochs: int = 2
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 0.003
    work_dir: str = "/tmp/fedtwin-study-feddu"
    backend: str = "local"  # resources.backend of every run: "local" (in-process) or "ray"
    workers: int = 2  # parallel worker processes with the local backend (one per core)
    extra: dict[str, Any] = field(default_factory=dict)  # dotted overrides applied to every run


def parse_setting(setting: str) -> tuple[str, str, str]:
    """``devices/server[/variant]`` -> its three parts (variant "" = default data)."""
    parts = setting.split("/")
    devices, server, variant = (parts + [""])[:3] if len(parts) in (2, 3) else ("?", "?", "?")
    if devices not in DEVICE_SPLITS or server not in SERVER_SPLITS or variant not in VARIANTS:
        raise ValueError(
            f"setting {setting!r}: expected devices/server[/variant] with devices in "
            f"{list(DEVICE_SPLITS)}, server in {list(SERVER_SPLITS)}, variant in {list(VARIANTS)[1:]}"
        )
    return devices, server, variant


def arm_spec(cfg: StudyConfig, setting: str, arm: str, seed: int) -> ExperimentSpec:
    """The experiment of one (setting, arm, seed)."""
    devices, server, variant = parse_setting(setting)
    partition = {"devices": cfg.devices, "seed": seed, **DEVICE_SPLITS[devices], **SERVER_SPLITS[server]}
    spec = {
        "name": f"{setting.replace('/', '-')}-{arm.replace(' ', '-')}-s{seed}",
        "seed": seed,
        "data": {
            "root": f"{cfg.work_dir}/data",
            "generator": {
                "train_per_class": cfg.train_per_class,
                "test_per_class": cfg.test_per_class,
                **VARIANTS[variant],
            },
            "partition": partition,
        },
        "training": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "lr": cfg.lr},
        "federation": {
            "num_rounds": cfg.rounds,
            "devices_per_round": cfg.devices_per_round,
            "round_timeout_s": 600,
            "target_accuracy": None,
        },
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
    run = {
        "setting": setting,
        "arm": arm,
        "seed": seed,
        "test_accuracy": [r.get("test_accuracy") for r in records],
        "alpha_t": [r.get("alpha_applied") for r in records],
        "acc_t": [r.get("acc_t") for r in records],
        "skipped": sum(bool(r.get("skipped")) for r in records),
        "reverted": sum(bool(r.get("reverted")) for r in records),
        "wall_seconds": time.time() - t0,
        "run_dir": portable(result.run_dir),
    }
    shutil.rmtree(result.run_dir, ignore_errors=True)  # the curves above are all the study keeps
    return run


def run_study(
    cfg: StudyConfig, log: Any = print, save: Any = None, done: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Run every (setting, seed, arm) on ``cfg.workers`` processes; returns the raw per-round curves.

    With ``backend: local`` each worker process runs whole experiments in-process (the same hosts,
    server node, strategies and round loop as on Ray, without actor start-up, which would otherwise
    cost more than the training in runs this short); with ``ray`` runs go one at a time on one shared
    local Ray instance. Jobs go setting by setting in ``cfg.settings`` order (put the headline first);
    ``save`` gets the results so far after every run, and runs in ``done`` (a previous partial study
    with the same budget) are kept instead of run again.
    """
    runs: list[dict[str, Any]] = list(done or [])
    have = {(r["setting"], r["arm"], r["seed"]) for r in runs}
    jobs = [
        (s, arm, seed)
        for s in cfg.settings
        for seed in cfg.seeds
        for arm in cfg.arms
        if (s, arm, seed) not in have and (s == cfg.settings[0] or arm not in cfg.headline_only_arms)
    ]
    # Generate the data and partitions once, before workers race for them (the file locks would cope).
    for setting in cfg.settings:
        for seed in cfg.seeds:
            ensure_partition(arm_spec(cfg, setting, cfg.arms[0], seed).data)
    started = time.time()

    def results(complete: bool) -> dict[str, Any]:
        order = sorted(runs, key=lambda r: (cfg.settings.index(r["setting"]), r["seed"], cfg.arms.index(r["arm"])))
        return {
            "config": {**asdict(cfg), "work_dir": portable(cfg.work_dir)},
            "runs": order,
            "complete": complete,
            "wall_seconds": sum(r["wall_seconds"] for r in runs) / max(cfg.workers, 1),
            "cpus": os.cpu_count(),
            "load_average_end": list(os.getloadavg()),
        }

    def report(run: dict[str, Any]) -> None:
        runs.append(run)
        elapsed, i = time.time() - started, len(runs) - len(done or [])
        log(
            f"[{i:3d}/{len(jobs)}] {run['setting']:20s} {run['arm']:15s} seed {run['seed']}: final "
            f"{run['test_accuracy'][-1]:.3f}, best {max(a for a in run['test_accuracy'] if a is not None):.3f}, "
            f"{run['wall_seconds']:.0f}s "
            f"(elapsed {elapsed / 60:.1f} min, eta {elapsed / i * (len(jobs) - i) / 60:.1f} min)"
        )
        if save is not None:
            save(results(False))

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
    return results(True)


#: StudyConfig fields that choose which runs to do, not how each run is done (``--continue`` ignores them).
SUBSET_KEYS = ("settings", "arms", "seeds", "headline_only_arms")


def parse_args(argv: list[str] | None = None) -> tuple[StudyConfig, argparse.Namespace]:
    """Command line: budget overrides, subsets of settings/arms, output folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--settings", nargs="+", help=f"subset of {', '.join(ALL_SETTINGS)} (devices/server[/variant])")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS))
    parser.add_argument("--targets", type=float, nargs="+")
    parser.add_argument("--work-dir")
    parser.add_argument("--backend", choices=["local", "ray"])
    parser.add_argument("--workers", type=int)
    parser.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override for every run, e.g. --set training.lr=0.1",
    )
    parser.add_argument("--out", default="docs/results", help="folder for NAME.md/.png/.json")
    parser.add_argument("--name", default="feddu", help="base name of the outputs (default feddu)")
    parser.add_argument("--render-only", action="store_true", help="rebuild table and plot from OUT/feddu.json")
    parser.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="keep the runs already in OUT/feddu.json (same budget) and run only the missing ones",
    )
    args = parser.parse_args(argv)
    from fedtwin.orchestrator.config.loader import parse_set_option

    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "rounds": args.rounds,
            "targets": tuple(args.targets) if args.targets else None,
            "work_dir": args.work_dir,
            "backend": args.backend,
            "workers": args.workers,
            "seeds": tuple(args.seeds) if args.seeds else None,
            "settings": tuple(args.settings) if args.settings else None,
            "arms": tuple(args.arms) if args.arms else None,
        }.items()
        if v is not None
    }
    if args.extra:
        changes["extra"] = dict(parse_set_option(s) for s in args.extra)
    return StudyConfig(**changes), args


def main(argv: list[str] | None = None) -> int:
    """Run (or re-render) the study and write the outputs."""
    cfg, args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / f"{args.name}.json"

    def save(results: dict[str, Any]) -> None:
        tmp = raw_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, raw_path)

    if args.render_only:
        results = json.loads(raw_path.read_text())
    else:
        done = None
        if args.resume and raw_path.exists():
            previous = json.loads(raw_path.read_text())
            if {k: v for k, v in previous["config"].items() if k not in (*SUBSET_KEYS, "work_dir")} != {
                k: v for k, v in json.loads(json.dumps(asdict(cfg))).items() if k not in (*SUBSET_KEYS, "work_dir")
            }:
                raise SystemExit(f"--continue: {raw_path} was made with another budget; drop --continue")
            done = previous["runs"]
        logging.basicConfig(level=logging.WARNING)
        print(
            f"FedDU study: {len(cfg.settings)} settings x {len(cfg.arms)} arms x {len(cfg.seeds)} seeds, "
            f"{cfg.rounds} rounds each",
            flush=True,
        )
        results = run_study(cfg, log=lambda line: print(line, flush=True), save=save, done=done)
        results["command"] = " ".join(
            ["python benchmarks/study_feddu.py"] + [a for a in sys.argv[1:] if a != "--continue"]
        )
        save(results)
    table = write_markdown(results, out / f"{args.name}.md")
    write_plot(results, out / f"{args.name}.png")
    print(table)
    print(f"wrote {out / args.name}.md/.png/.json ({results['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
