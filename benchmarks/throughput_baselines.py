"""The two baselines ``bench_throughput.py`` puts next to fedtwin (see its docstring).

- :func:`limit_rounds`: one worker process per core, one torch thread each, all of its devices' clips in
  memory, the same ``local_train`` (with a ``TrainWorkspace``), seeds, model, allocator set-up and FedAvg
  fold as fedtwin's hosts, the same device-to-worker split (``device % workers``); nothing else.
- :func:`pool_rounds`: a Ray ``ActorPool`` with one actor per core and one task per device (read the
  shard, build the model, train, return the weights); the driver averages all devices' weights.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.pipelines.data.partition_manifest import load_partition_manifest


def _limit_worker(worker: int, workers: int, partition: str, model_cfg: Any, seed: int, conn: Any) -> None:
    import numpy as np
    import torch

    from fedtwin.actors.torch_runtime import keep_freed_memory
    from fedtwin.pipelines.core.seeding import reseed
    from fedtwin.pipelines.data.partition_manifest import load_device_shard, load_partition_manifest
    from fedtwin.pipelines.federated.hosts import devices_of
    from fedtwin.pipelines.model.networks import build_model
    from fedtwin.pipelines.model.state import add_scaled, zeros_like
    from fedtwin.pipelines.model.training import TrainWorkspace, local_train

    keep_freed_memory()  # the hosts' allocator set-up (actors/torch_runtime.py), so only orchestration differs
    torch.set_num_threads(1)
    manifest = load_partition_manifest(partition)
    data = {}
    for d in devices_of(worker, workers, manifest.num_devices):
        shard = load_device_shard(manifest, d)
        data[d] = (np.array(shard.clips), np.array(shard.labels))  # writable, in this process's memory
    model = build_model(model_cfg, seed=seed)
    views = {k: v.numpy() for k, v in model.state_dict().items()}
    workspace, generator = TrainWorkspace(), torch.Generator()
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        started = time.perf_counter()
        round_num, state, device_ids, settings = msg
        partial, total = None, 0
        for d in device_ids:
            for key, view in views.items():
                np.copyto(view, state[key])
            local_train(
                model,
                data[d],
                settings,
                generator=reseed(generator, seed, round_num, d),
                workspace=workspace,
                return_optimizer_state=False,
            )
            partial = zeros_like(views) if partial is None else partial
            add_scaled(partial, views, float(len(data[d][1])))
            total += len(data[d][1])
        conn.send((partial, total, time.perf_counter() - started))


def limit_rounds(spec: ExperimentSpec, cores: int) -> tuple[list[float], dict[str, Any], list[float]]:
    """The limit: round-end stamps, the final weights of ``spec``'s rounds on ``cores`` workers, and each
    round's busy seconds (the workers' time from receiving the round to answering, summed over workers)."""
    from fedtwin.orchestrator.recipes.federated.recipe import build_strategy
    from fedtwin.orchestrator.recipes.federated.round import round_settings
    from fedtwin.orchestrator.run.data_prep import ensure_partition
    from fedtwin.pipelines.core.seeding import sampling_rng
    from fedtwin.pipelines.federated.aggregate import OrderedFold
    from fedtwin.pipelines.federated.hosts import host_of
    from fedtwin.pipelines.federated.messages import HostFitResult
    from fedtwin.pipelines.model.networks import build_model
    from fedtwin.pipelines.model.state import state_from_model

    partition = str(ensure_partition(spec.data))
    strategy = build_strategy(spec, load_partition_manifest(partition).num_devices)
    ctx = mp.get_context("spawn")
    # One thread per worker for every math library, as Ray gives its workers (OMP_NUM_THREADS=1).
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    pipes, procs = [], []
    for w in range(cores):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_limit_worker, args=(w, cores, partition, spec.model, spec.seed, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    assert all(p.recv() == "ready" for p in pipes)
    state = state_from_model(build_model(spec.model, seed=spec.seed))
    ends, busy = [], []
    for round_num in range(1, spec.federation.num_rounds + 1):
        devices = strategy.sample_devices(round_num, sampling_rng(spec.seed, round_num))
        settings = round_settings(spec, round_num)
        for w, pipe in enumerate(pipes):
            pipe.send((round_num, state, [int(d) for d in devices if host_of(d, cores) == w], settings))
        fold, round_busy = OrderedFold(range(cores)), 0.0
        for w, pipe in enumerate(pipes):
            partial, total, seconds = pipe.recv()
            fold.add(HostFitResult(w, (), (), partial, total))
            round_busy += seconds
        state, _ = strategy.aggregate_fit(round_num, state, fold.finish(state))
        ends.append(time.perf_counter())
        busy.append(round_busy)
    for pipe in pipes:
        pipe.send(None)
    for proc in procs:
        proc.join()
    return ends, state, busy


def pool_rounds(spec: ExperimentSpec, cores: int) -> list[float]:
    """A per-client actor pool: round-end stamps of ``spec``'s rounds with one actor per core."""
    import ray
    from ray.util.actor_pool import ActorPool

    from fedtwin.orchestrator.recipes.federated.recipe import build_strategy
    from fedtwin.orchestrator.recipes.federated.round import round_settings
    from fedtwin.orchestrator.run.data_prep import ensure_partition
    from fedtwin.pipelines.core.seeding import sampling_rng
    from fedtwin.pipelines.model.networks import build_model
    from fedtwin.pipelines.model.state import state_from_model, weighted_average

    @ray.remote(num_cpus=1)
    class Client:
        def __init__(self, partition: str) -> None:
            import torch

            torch.set_num_threads(1)
            self.partition = partition

        def fit(self, state: Any, device_id: int, round_num: int, settings: Any, model_cfg: Any, seed: int) -> Any:
            from fedtwin.pipelines.core.seeding import torch_generator
            from fedtwin.pipelines.data.partition_manifest import load_device_shard
            from fedtwin.pipelines.model.state import load_state
            from fedtwin.pipelines.model.training import local_train

            data = load_device_shard(self.partition, device_id)
            model = build_model(model_cfg, seed=seed)
            load_state(model, state)
            local_train(model, data, settings, generator=torch_generator(seed, round_num, device_id))
            return state_from_model(model), len(data)

    partition = str(ensure_partition(spec.data))
    strategy = build_strategy(spec, load_partition_manifest(partition).num_devices)
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    pool = ActorPool([Client.remote(partition) for _ in range(cores)])
    state = state_from_model(build_model(spec.model, seed=spec.seed))
    ends = []
    for round_num in range(1, spec.federation.num_rounds + 1):
        devices = strategy.sample_devices(round_num, sampling_rng(spec.seed, round_num))
        settings, ref = round_settings(spec, round_num), ray.put(state)
        answers = list(
            pool.map(
                lambda a, d, ref=ref, r=round_num, s=settings: a.fit.remote(ref, int(d), r, s, spec.model, spec.seed),
                devices,
            )
        )
        state = weighted_average([s for s, _ in answers], [n for _, n in answers])
        ends.append(time.perf_counter())
    ray.shutdown()
    return ends
