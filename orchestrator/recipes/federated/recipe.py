"""Recipe ``federated``: rounds of device sampling, local training, folding and a strategy update.

One round (DESIGN.md "Data flow of one federated round"): sample devices with a generator seeded from
``(seed, round)``; ``ray.put`` the state once; hosts train their devices; the driver folds host partial
sums in host order; the strategy makes the next state; evaluate; log; checkpoint atomically.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from orchestrator.recipes.federated.ray_backend import RayBackend, plan_hosts
from orchestrator.recipes.federated.round import run_round
from orchestrator.run.checkpoint import latest_checkpoint, save_checkpoint
from orchestrator.config.spec import ExperimentSpec
from orchestrator.run.data_prep import ensure_partition
from orchestrator.recipes.federated.local_backend import LocalBackend
from orchestrator.run.plots import plot_curves
from orchestrator.run.context import RecipeContext, first_reaching, versions
from orchestrator.recipes.federated.strategies import STRATEGIES, Strategy, StrategyContext
from pipelines.core.errors import FedtwinError
from pipelines.model.networks import build_model
from pipelines.data.partition_manifest import PartitionManifest, load_partition_manifest
from pipelines.model.state import ModelState, state_from_model

logger = logging.getLogger(__name__)


def build_strategy(spec: ExperimentSpec, num_devices: int, context: StrategyContext | None = None) -> Strategy:
    """Instantiate the configured strategy from the registry."""
    cls = STRATEGIES[spec.strategy.name]
    params = cls.parse_params(spec.strategy.params)
    return cls(params, num_devices=num_devices, devices_per_round=spec.federation.devices_per_round, context=context)


def strategy_context(manifest: PartitionManifest, server: Any = None) -> StrategyContext:
    """Label histograms from the manifest (devices' and D0's counts, never data) plus the server handle."""
    return StrategyContext(
        num_classes=manifest.num_classes,
        global_label_histogram=manifest.global_label_histogram,
        server_label_histogram=np.asarray(manifest.shared.label_histogram, dtype=np.int64),
        server=server,
    )


def run_federated(ctx: RecipeContext) -> dict[str, Any]:
    """Run (or resume) a federated experiment; returns the summary written to ``summary.json``."""
    spec = ctx.spec
    fed = spec.federation
    partition_dir = ensure_partition(spec.data)
    manifest = load_partition_manifest(partition_dir)
    num_devices = manifest.num_devices
    needs_server = STRATEGIES[spec.strategy.name].needs_server
    if needs_server and manifest.shared.num_examples == 0:
        raise FedtwinError(
            f"strategy {spec.strategy.name} needs shared server data but {partition_dir} has none; "
            "set data.partition.shared_fraction > 0 (or partition with `fedtwin data partition --shared`)"
        )
    build_strategy(spec, num_devices, strategy_context(manifest))  # fail on bad params before actors start
    num_hosts = plan_hosts(spec, num_devices, ctx.cluster_resources)
    state: ModelState = state_from_model(build_model(spec.model, seed=spec.seed))
    backend: RayBackend | LocalBackend
    if spec.resources.backend == "local":
        backend = LocalBackend(spec, str(partition_dir), num_devices, num_hosts, server_node=needs_server)
    else:
        backend = RayBackend(
            spec, str(partition_dir), num_devices, num_hosts, ctx.scheduling_strategy, server_node=needs_server
        )
    start = 1
    try:
        server = backend.server_access() if needs_server else None
        strategy = build_strategy(spec, num_devices, strategy_context(manifest, server))
        if ctx.resume:
            ckpt = latest_checkpoint(ctx.run.checkpoints)
            if ckpt is not None:
                state = ckpt.model
                strategy.load_state_dict(ckpt.extra.get("strategy", {}))
                backend.load_device_states({int(k): v for k, v in ckpt.extra.get("devices", {}).items()})
                start = ckpt.round_num + 1
                ctx.run.truncate_metrics(ckpt.round_num)
                logger.info("resuming after round %d", ckpt.round_num)
        ctx.callbacks.on_run_start(
            {"recipe": "federated", "run_dir": str(ctx.run.path), "total_steps": fed.num_rounds,
             "start_step": start, "unit": "round", "hosts": num_hosts, "devices": num_devices}
        )
        for round_num in range(start, fed.num_rounds + 1):
            state, record = run_round(ctx.spec, strategy, backend, state, round_num)
            ctx.run.append_metrics(record)
            ctx.callbacks.on_round_end(round_num, record)
            if round_num % ctx.spec.run.checkpoint_every == 0 or round_num == fed.num_rounds:
                path = save_checkpoint(
                    ctx.run.checkpoints, round_num, state,
                    {"strategy": strategy.state_dict(), "devices": {str(k): v for k, v in backend.device_states().items()}},
                    {"recipe": "federated", "partition": str(partition_dir)},
                    keep=ctx.spec.run.keep_checkpoints,
                )
                ctx.callbacks.on_checkpoint(round_num, path)
    finally:
        backend.shutdown()
    records = ctx.run.read_metrics()
    plot_curves(records, ctx.run.plots / "accuracy.png", title=f"{spec.name} ({spec.strategy.name})")
    # Strategies with a server update (FedDU) log alpha_t and acc_t; the plot is skipped for the others.
    plot_curves(records, ctx.run.plots / "server_update.png", title=f"{spec.name}: server update",
                panels=(("alpha", ("alpha_t", "alpha_applied")), ("accuracy on D0", ("acc_t",))))
    evaluated = [r for r in records if r.get("test_accuracy") is not None]
    summary = {
        "recipe": "federated",
        "name": spec.name,
        "strategy": strategy.describe(),
        "rounds": fed.num_rounds,
        "final_test_accuracy": evaluated[-1]["test_accuracy"] if evaluated else None,
        "final_test_loss": evaluated[-1]["test_loss"] if evaluated else None,
        "best_test_accuracy": max((r["test_accuracy"] for r in evaluated), default=None),
        "target_accuracy": fed.target_accuracy,
        "rounds_to_target": first_reaching(records, "test_accuracy", fed.target_accuracy),
        "median_round_seconds": float(np.median([r["round_seconds"] for r in records])) if records else None,
        "wall_seconds": time.time() - ctx.started,
        "num_devices": num_devices,
        "num_hosts": num_hosts,
        "partition": str(partition_dir),
        "versions": versions(),
    }
    return summary
