"""Where a device host's time goes per device: ``DeviceHost.fit`` under cProfile, bucketed.

One host of two trains up to 500 of its devices of ``bench_throughput.py``'s ``tiny3d-step`` workload (after
a warm-up round that also builds its device store) in this process; the cumulative times of the
functions below are divided by the devices. To profile an older version of fedtwin, run this file with
that version's tree first on ``PYTHONPATH`` (functions it lacks count zero).

    python benchmarks/profile_host.py [--devices 500] [--workload tiny3d-step]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: bucket -> predicate on cProfile's (file, line, function) key; summed cumulative times
BUCKETS = {
    "forward (model + loss)": lambda k: k[2] == "cross_entropy_loss",
    "backward": lambda k: k[2].startswith("<method 'run_backward'"),
    "optimizer step + zero_grad": lambda k: (
        "torch/optim" in k[0] and (k[2] == "zero_grad" or k[0].endswith("sgd.py") and k[2] == "step")
    ),
    "the device's clips": lambda k: k[2] == "shard" and k[0].endswith("device_host.py"),
    "seeding": lambda k: (
        k[2] in ("torch_generator", "reseed", "_forked_rng")
        or (k[2] in ("fork_rng", "manual_seed") and k[0].endswith("random.py"))
    ),
    "optimizer built / reset": lambda k: k[2] in ("_make_optimizer", "optimizer") and k[0].endswith("training.py"),
    "weights in": lambda k: (
        (k[2] == "load_state" and k[0].endswith("state.py")) or (k[2] == "_load" and k[0].endswith("device_host.py"))
    ),
    "weights out and partial sum": lambda k: (
        k[2] in ("state_from_model", "from_devices") or (k[2] == "add" and k[0].endswith("device_host.py"))
    ),
    "label histogram": lambda k: k[2] == "label_histogram",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--workload", default="tiny3d-step")
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args()
    from bench_throughput import spec_dict

    from fedtwin.actors.federated.device_host import DeviceHost, HostSettings
    from fedtwin.orchestrator.config.spec import ExperimentSpec
    from fedtwin.orchestrator.recipes.federated.round import round_settings
    from fedtwin.orchestrator.run.data_prep import ensure_partition
    from fedtwin.pipelines.federated.messages import FitTask
    from fedtwin.pipelines.model.networks import build_model
    from fedtwin.pipelines.model.state import state_from_model

    spec = ExperimentSpec.from_dict(
        spec_dict(args.workload, argparse.Namespace(data_root=args.data_root, rounds=2, cores=2, run_root="runs"))
    )
    host = DeviceHost(0, 2, str(ensure_partition(spec.data)), HostSettings(seed=0, model=spec.model))
    state = state_from_model(build_model(spec.model, seed=0))
    devices = sorted(host.devices)
    settings = round_settings(spec, 1)
    host.fit(state, [FitTask(d, 1, settings) for d in devices[:30]])  # warm-up (and the device store)
    tasks = [FitTask(d, 2, settings) for d in devices[30 : 30 + args.devices]]
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    host.fit(state, tasks)
    profile.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    n = len(tasks)
    print(f"{n} devices of {args.workload}: {wall / n * 1e3:.2f} ms per device under cProfile")
    accounted = 0.0
    for name, pred in BUCKETS.items():
        seconds = sum(v[3] for k, v in stats.items() if pred(k))
        accounted += seconds
        print(f"  {name:30s} {seconds / n * 1e3:7.2f} ms  {seconds / wall * 100:5.1f}%")
    print(f"  {'other Python':30s} {(wall - accounted) / n * 1e3:7.2f} ms  {(wall - accounted) / wall * 100:5.1f}%")


if __name__ == "__main__":
    main()
