"""Search a model + local-training recipe for ``configs/quickstart.yaml`` (FedAvg on moving digits).

The quickstart must reach >= 0.85 test accuracy with >= 50 devices, Dirichlet(0.5) label skew and
FedAvg on a 2-core machine within a few minutes, so training gets roughly 90-120 s of 2-core compute.
This script replays that workload in ONE process without Ray: the same data generator, the same
partitioner, the same ``local_train`` and FedAvg weighting, and evaluation on the test split after every
round, as the real run does. Devices run one after another on one thread; two device hosts would
share a round's devices, so the estimated 2-core time is ``train_s / 2 + eval_s`` (evaluation runs on one
actor). Times are CPU seconds of this process (``time.process_time``), so that other jobs on a shared
machine inflate them less than wall-clock times; on an idle machine the two agree. Ray, Parquet I/O
and process start-up are not included: ``benchmarks/bench_rounds.py`` measures that overhead.

Examples::

    python benchmarks/search_quickstart.py --centralised            # does the model learn at all?
    python benchmarks/search_quickstart.py --speed                   # ms per clip, one thread
    python benchmarks/search_quickstart.py --seeds 0 1 2             # the chosen recipe on 3 seeds
    python benchmarks/search_quickstart.py --grid participation     # the main comparison
    python benchmarks/search_quickstart.py --config '{"lr": 0.002, "rounds": 40}' --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedtwin.pipelines.core.seeding import sampling_rng, torch_generator
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, generate
from fedtwin.pipelines.data.partition import PartitionConfig, make_partitioner
from fedtwin.pipelines.model.networks import ModelConfig, build_model, count_parameters
from fedtwin.pipelines.model.state import load_state, state_from_model, weighted_average
from fedtwin.pipelines.model.training import TrainSettings, evaluate, local_train

TARGET = 0.85


@dataclass(frozen=True)
class Recipe:
    """One candidate quickstart: data size, federation, model and local training (defaults: the pick)."""

    train_per_class: int = 300
    test_per_class: int = 100
    devices: int = 50
    alpha: float = 0.5
    min_size: int = 1
    devices_per_round: int = 20
    rounds: int = 35
    epochs: int = 3
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)

    def label(self, base: Recipe) -> str:
        """The fields that differ from ``base``, as a short string."""
        diff = {k: v for k, v in dataclasses.asdict(self).items() if v != getattr(base, k)}
        return json.dumps(diff, separators=(",", ":")) if diff else "base"


# Candidates are overrides of the Recipe defaults (the chosen quickstart recipe). What the search found on
# 2-3 seeds: full participation wastes compute (50 devices x 2 epochs reached 0.85 only at rounds 21-25);
# fewer devices per round with more local epochs gets there with less work; local Adam beats local SGD.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "default": [{}],
    "participation": [
        {},
        {"devices_per_round": 50, "epochs": 2, "rounds": 30},
        {"devices_per_round": 50, "epochs": 1, "rounds": 30},
        {"devices_per_round": 25, "epochs": 2, "rounds": 40},
        {"devices_per_round": 20, "epochs": 4, "rounds": 30},
        {"devices_per_round": 10, "epochs": 5, "rounds": 50},
    ],
    "optimizers": [
        {},
        {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
        {"lr": 0.005},
        {"lr": 0.001},
        {"batch_size": 32, "lr": 0.004},
    ],
}


def _device_rows(labels: np.ndarray, recipe: Recipe, seed: int) -> list[np.ndarray]:
    """Row indices per device, drawn like ``partition_dataset`` does (no shared split)."""
    cfg = PartitionConfig(
        devices=recipe.devices, scheme="dirichlet", alpha=recipe.alpha, min_size=recipe.min_size, seed=seed
    )
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[1])
    device = make_partitioner(cfg).assign(labels, cfg.devices, rng)
    return [np.flatnonzero(device == d) for d in range(cfg.devices)]


def run_federated(recipe: Recipe, seed: int) -> dict[str, Any]:
    """One FedAvg run; returns accuracy per round and the time spent training and evaluating."""
    t0 = time.process_time()
    data_cfg = MovingDigitsConfig(train_per_class=recipe.train_per_class, test_per_class=recipe.test_per_class)
    train, test = generate(data_cfg, "train", seed), generate(data_cfg, "test", seed)
    shards = [train.subset(rows) for rows in _device_rows(train.labels, recipe, seed)]
    gen_s = time.process_time() - t0

    model = build_model(ModelConfig(**recipe.model), seed)
    global_state = state_from_model(model)
    accuracies: list[float] = []
    train_s = eval_s = 0.0
    settings = TrainSettings(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        optimizer=recipe.optimizer,
    )  # type: ignore[arg-type]
    for round_num in range(1, recipe.rounds + 1):
        t0 = time.process_time()
        picked = sampling_rng(seed, round_num).choice(recipe.devices, recipe.devices_per_round, replace=False)
        states, weights = [], []
        for device_id in sorted(picked.tolist()):
            load_state(model, global_state)
            # an independent stream per (seed, round, device), like the device hosts' per-device streams
            result = local_train(
                model, shards[device_id], settings, generator=torch_generator(seed, round_num, device_id)
            )
            states.append(state_from_model(model))
            weights.append(result.num_examples)
        global_state = weighted_average(states, weights)
        t1 = time.process_time()
        load_state(model, global_state)
        accuracies.append(evaluate(model, test).accuracy)
        train_s += t1 - t0
        eval_s += time.process_time() - t1
    reached = next((i + 1 for i, a in enumerate(accuracies) if a >= TARGET), None)
    return {
        "accuracies": accuracies,
        "gen_s": gen_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "est_2core_s": train_s / 2 + eval_s,
        "rounds_to_target": reached,
    }


def run_centralised(recipe: Recipe, seed: int, epochs: int) -> list[tuple[int, float, float]]:
    """Plain training on all train clips: (epoch, test accuracy, seconds so far) per epoch."""
    data_cfg = MovingDigitsConfig(train_per_class=recipe.train_per_class, test_per_class=recipe.test_per_class)
    train, test = generate(data_cfg, "train", seed), generate(data_cfg, "test", seed)
    model = build_model(ModelConfig(**recipe.model), seed)
    gen = torch.Generator().manual_seed(seed)
    out, start = [], time.process_time()
    for epoch in range(1, epochs + 1):
        local_train(
            model,
            train,
            TrainSettings(
                epochs=1,
                batch_size=recipe.batch_size,
                lr=recipe.lr,
                momentum=recipe.momentum,
                optimizer=recipe.optimizer,
            ),  # type: ignore[arg-type]
            generator=gen,
        )
        out.append((epoch, evaluate(model, test).accuracy, time.process_time() - start))
    return out


def measure_speed(recipe: Recipe, clips: int = 512) -> dict[str, float]:
    """Milliseconds per clip for a training step (at the recipe's and twice its batch size) and for eval."""
    model = build_model(ModelConfig(**recipe.model), 0)
    data = MovingDigitsConfig(train_per_class=max(1, clips // 10))
    train = generate(data, "train", 0)
    out: dict[str, float] = {}
    for batch in (recipe.batch_size, 2 * recipe.batch_size):
        settings = TrainSettings(epochs=1, batch_size=batch, lr=recipe.lr, optimizer=recipe.optimizer)  # type: ignore[arg-type]
        local_train(model, train.subset(slice(0, 64)), settings, generator=torch.Generator().manual_seed(0))  # warm-up
        start = time.process_time()
        local_train(model, train, settings, generator=torch.Generator().manual_seed(0))
        out[f"train_ms_per_clip_b{batch}"] = 1000 * (time.process_time() - start) / len(train)
    evaluate(model, train.subset(slice(0, 64)))
    start = time.process_time()
    evaluate(model, train)
    out["eval_ms_per_clip"] = 1000 * (time.process_time() - start) / len(train)
    return out


def _fmt_curve(accuracies: list[float], every: int) -> str:
    picks = [(i + 1, a) for i, a in enumerate(accuracies) if (i + 1) % every == 0 or i + 1 == len(accuracies)]
    return " ".join(f"{r}:{a:.3f}" for r, a in picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default")
    parser.add_argument("--config", action="append", default=[], help="JSON overrides of Recipe (repeatable)")
    parser.add_argument("--base", default="{}", help="JSON overrides applied to every candidate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one host's share)")
    parser.add_argument("--every", type=int, default=5, help="print the accuracy every N rounds")
    parser.add_argument("--speed", action="store_true", help="only measure ms per clip (train step, eval)")
    parser.add_argument(
        "--centralised",
        type=int,
        nargs="?",
        const=3,
        default=0,
        metavar="EPOCHS",
        help="sanity run: plain training on all clips for EPOCHS epochs instead",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = Recipe(**json.loads(args.base))
    overrides = [json.loads(c) for c in args.config] or GRIDS[args.grid]
    candidates = [dataclasses.replace(base, **o) for o in overrides]
    params = count_parameters(build_model(ModelConfig(**base.model), 0))
    print(f"base recipe: {dataclasses.asdict(base)}  ({params} parameters, {args.threads} torch thread(s))")
    if args.speed:
        for key, value in measure_speed(base).items():
            print(f"{key}: {value:.3f}")
        return
    if args.centralised:
        for recipe in candidates:
            for seed in args.seeds:
                curve = run_centralised(recipe, seed, args.centralised)
                text = " ".join(f"ep{e}:{a:.3f}({s:.0f}s)" for e, a, s in curve)
                print(f"centralised {recipe.label(Recipe())} seed={seed}: {text}", flush=True)
        return

    print(
        f"{'recipe':<48} {'seed':>4} {'final':>6} {'best':>6} {'to0.85':>6} {'train_s':>8} {'eval_s':>6} "
        f"{'est2c_s':>7}  accuracy by round"
    )
    for recipe in candidates:
        finals = []
        for seed in args.seeds:
            r = run_federated(recipe, seed)
            acc = r["accuracies"]
            finals.append(acc[-1])
            print(
                f"{recipe.label(base):<48} {seed:>4} {acc[-1]:>6.3f} {max(acc):>6.3f} "
                f"{str(r['rounds_to_target']):>6} {r['train_s']:>8.1f} {r['eval_s']:>6.1f} {r['est_2core_s']:>7.1f}"
                f"  {_fmt_curve(acc, args.every)}",
                flush=True,
            )
        if len(finals) > 1:
            print(f"{'  -> mean final / min final':<48} {'':>4} {np.mean(finals):>6.3f} {min(finals):>6.3f}")


if __name__ == "__main__":
    main()
