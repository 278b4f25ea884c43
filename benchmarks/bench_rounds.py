"""Per-round wall time of fedtwin vs the same work in one process without Ray (the compute limit).

Both sides run the same rounds of the same experiment: the same sampled devices, the same local
training (``fedtwin.pipelines.model.training.local_train`` with the same per-device seeds), the same FedAvg mean and
the same test-set evaluations (on the rounds fedtwin evaluates: every ``federation.eval_every`` rounds and
the last). ``benchmarks/bench_throughput.py`` measures devices per second against a per-core limit.
The compute-limit side keeps every shard in memory, trains the devices
one after another in this process with ``torch.set_num_threads(<cores>)`` and pays no Ray, no
serialisation and no shard I/O. Medians are over rounds 2..N (round 1 includes actor start-up and
first shard reads).

    python benchmarks/bench_rounds.py [--config configs/quickstart.yaml] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.recipe import build_strategy
from fedtwin.orchestrator.recipes.federated.round import round_settings
from fedtwin.orchestrator.run.data_prep import ensure_partition
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder
from fedtwin.pipelines.core.seeding import sampling_rng, torch_generator
from fedtwin.pipelines.data.partition_manifest import load_device_shard, load_partition_manifest, load_test
from fedtwin.pipelines.model.networks import build_model
from fedtwin.pipelines.model.state import load_state, state_from_model, weighted_average
from fedtwin.pipelines.model.training import evaluate, local_train


def compute_limit_rounds(spec: ExperimentSpec, threads: int) -> list[float]:
    """Round times of the same workload in one process (no Ray), all data preloaded."""
    torch.set_num_threads(threads)
    partition = ensure_partition(spec.data)
    manifest = load_partition_manifest(partition)
    shards = {d: load_device_shard(manifest, d) for d in range(manifest.num_devices)}
    test = load_test(manifest)
    strategy = build_strategy(spec, manifest.num_devices)
    model = build_model(spec.model, seed=spec.seed)
    state = state_from_model(model)
    times = []
    for round_num in range(1, spec.federation.num_rounds + 1):
        started = time.perf_counter()
        devices = strategy.sample_devices(round_num, sampling_rng(spec.seed, round_num))
        settings = round_settings(spec, round_num)
        states, sizes = [], []
        for d in devices:
            load_state(model, state)
            # the device hosts' per-(run, round, device) stream
            local_train(model, shards[d], settings, generator=torch_generator(spec.seed, round_num, d))
            states.append(state_from_model(model))
            sizes.append(len(shards[d]))
        state = weighted_average(states, sizes)
        if round_num % spec.federation.eval_every == 0 or round_num == spec.federation.num_rounds:
            load_state(model, state)
            evaluate(model, test, batch_size=256)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--rounds", type=int, default=10, help="rounds to time (medians over rounds 2..N)")
    parser.add_argument("--output", default="runs/bench", help="run folder parent for the fedtwin side")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    spec = ExperimentSpec.from_yaml(
        args.config,
        {
            "federation.num_rounds": args.rounds,
            "run.output_dir": args.output,
            "name": "bench-rounds",
            "strategy.name": "fedavg",
            "strategy.params": {},
        },
    )
    print(
        f"workload: {args.config}, {args.rounds} rounds, {spec.federation.devices_per_round} devices/round, "
        f"{spec.training.epochs} local epoch(s), FedAvg, {cores} cores",
        file=sys.stderr,
    )

    result = run_experiment(spec)
    fed = [r["round_seconds"] for r in RunFolder(result.run_dir).read_metrics()]
    limit = compute_limit_rounds(spec, threads=cores)
    limit_1t = compute_limit_rounds(spec, threads=1)

    rows = [
        (f"fedtwin (Ray, {result.summary['num_hosts']} hosts x {spec.resources.torch_threads} thread)", fed),
        (f"one process, no Ray, {cores} threads", limit),
        ("one process, no Ray, 1 thread", limit_1t),
    ]
    ideal_split = statistics.median(limit_1t[1:]) / cores  # perfect parallelism over the cores
    print(f"\n| side | median round s (rounds 2..{args.rounds}) | min | max |")
    print("|---|---|---|---|")
    for name, times in rows:
        tail = times[1:]
        print(f"| {name} | {statistics.median(tail):.3f} | {min(tail):.3f} | {max(tail):.3f} |")
    fed_med = statistics.median(fed[1:])
    print(f"\noverhead ratio fedtwin / one-process ({cores} threads): {fed_med / statistics.median(limit[1:]):.2f}")
    print(f"overhead ratio fedtwin / ideal {cores}-way split of the 1-thread time: {fed_med / ideal_split:.2f}")
    print(f"fedtwin final test accuracy: {result.summary['final_test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
