"""Recipe ``federated``: rounds of device sampling, local training, folding and a strategy update.

One round (:func:`fedtwin.orchestrator.recipes.federated.round.run_round`): sample devices with a generator
seeded from ``(seed, round)``; put the state in the object store once; device hosts train their devices
and return pre-summed partial results; the driver folds them in host order; the strategy (FedAvg,
FedAvgM, FedDU, FedDUM or a plugin) makes the next state; the evaluator scores it. The run loop
(:mod:`fedtwin.orchestrator.run.loop`) does the rest: resume, metrics, checkpoints, callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.recipes import builtin_sections
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.base import CheckpointState, Recipe
from fedtwin.orchestrator.recipes.federated.backend import plan_hosts
from fedtwin.orchestrator.recipes.federated.backend_common import DEVICES_SECTION
from fedtwin.orchestrator.recipes.federated.backend_factory import make_backend
from fedtwin.orchestrator.recipes.federated.config import RETIRED_KEYS
from fedtwin.orchestrator.recipes.federated.config import validate as validate_federated
from fedtwin.orchestrator.recipes.federated.preflight import check_federated
from fedtwin.orchestrator.recipes.federated.round import StartedRound, run_round
from fedtwin.orchestrator.recipes.federated.strategies import Strategy, StrategyContext, strategy_class
from fedtwin.orchestrator.recipes.federated.system_clock import (
    ClockedSampling,
    SystemClock,
    clocked_devices_per_round,
)
from fedtwin.orchestrator.run import phases
from fedtwin.orchestrator.run.checkpoint import Checkpoint
from fedtwin.orchestrator.run.context import first_reaching
from fedtwin.orchestrator.run.data_prep import ensure_partition
from fedtwin.orchestrator.run.footprint import Bundle, Footprint, bundle
from fedtwin.orchestrator.run.plots import plot_confusion, plot_curves
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.data.partition_manifest import PartitionManifest, load_partition_manifest
from fedtwin.pipelines.federated.system_model import time_to_accuracy
from fedtwin.pipelines.model.networks import build_model
from fedtwin.pipelines.model.state import ModelState, state_from_model

logger = logging.getLogger(__name__)


def build_strategy(spec: ExperimentSpec, num_devices: int, context: StrategyContext | None = None) -> Strategy:
    """Instantiate the configured strategy (a built-in name, an entry point or an import path)."""
    cls = strategy_class(spec.strategy.name)
    params = cls.parse_params(spec.strategy.params)
    # With the modelled clock's over-selection the strategy samples more; the clock keeps devices_per_round.
    return cls(params, num_devices=num_devices, devices_per_round=clocked_devices_per_round(spec), context=context)


def strategy_context(manifest: PartitionManifest, server: Any = None) -> StrategyContext:
    """Label histograms from the manifest (devices' and D0's counts, never data) plus the server handle."""
    return StrategyContext(
        num_classes=manifest.num_classes,
        global_label_histogram=manifest.global_label_histogram,
        server_label_histogram=np.asarray(manifest.shared.label_histogram, dtype=np.int64),
        server=server,
    )


class FederatedRecipe(Recipe):
    """Federated rounds over simulated edge devices served by device hosts."""

    name = "federated"
    unit = "round"
    sections = builtin_sections("federated")  # training, federation, strategy, system (torch-free)
    retired_keys = RETIRED_KEYS

    @classmethod
    def validate(cls, spec: ExperimentSpec) -> None:
        """The strategy resolves and its ``params`` parse (errors name ``strategy.params.<key>``); keys
        that need the modelled clock come with ``system.enabled``. Loading a spec runs the same function
        without importing this module (``BUILTIN_HOOKS``)."""
        validate_federated(spec)

    @classmethod
    def preflight(cls, spec: ExperimentSpec) -> None:
        """The common checks, then the partition against the federation settings (no actors started)."""
        super().preflight(spec)
        check_federated(spec)

    @classmethod
    def needs_ray(cls, spec: ExperimentSpec) -> bool:
        """``resources.backend: local`` runs hosts and server node in this process, without Ray."""
        return spec.resources.backend != "local"

    @classmethod
    def target(cls, spec: ExperimentSpec) -> float | None:
        """``federation.target_accuracy``."""
        return spec.federation.target_accuracy

    @classmethod
    def footprint(cls, spec: ExperimentSpec, driver: Bundle) -> Footprint:
        """The driver, one bundle per device host and one for the evaluator / server node."""
        res = spec.resources
        if res.backend == "local":  # hosts and server node run inside the driver process
            return Footprint((driver,), hosts=0)
        if res.hosts is None:
            raise ConfigError("resources.hosts: must be set for a sweep (each trial reserves a fixed footprint)")
        host = {**bundle(res.cpus_per_host, res.gpus_per_host), **res.host_resources}
        server = bundle(res.server_cpus, res.server_gpus)
        bundles = [driver] + ([host] * res.hosts if host else []) + ([server] if server else [])
        return Footprint(tuple(bundles), hosts=res.hosts if host else 0)

    # ------------------------------------------------------------------ lifecycle
    def setup(self) -> None:
        spec, ctx = self.spec, self.ctx
        self.backend: Any = None
        self.partition_dir = ensure_partition(spec.data)
        manifest = load_partition_manifest(self.partition_dir)
        self.num_devices = manifest.num_devices
        if spec.federation.devices_per_round > self.num_devices:
            raise ConfigError(
                f"federation.devices_per_round: {spec.federation.devices_per_round} is more than the "
                f"{self.num_devices} devices of {self.partition_dir}; lower it or partition over more devices"
            )
        strategy_cls = strategy_class(spec.strategy.name)
        needs_server = strategy_cls.needs_server
        if needs_server and manifest.shared.num_examples == 0:
            raise FedtwinError(
                f"strategy {spec.strategy.name} needs shared server data but {self.partition_dir} has none; "
                "set data.partition.shared_fraction > 0 (or partition with `fedtwin data partition --shared`)"
            )
        build_strategy(spec, self.num_devices, strategy_context(manifest))  # bad params fail before actors start
        self.num_hosts = plan_hosts(spec, self.num_devices, ctx.cluster_resources)
        self.state: ModelState = state_from_model(build_model(spec.model, seed=spec.seed))
        # The modelled clock (system.enabled): its profiles and FLOP count, before any actor starts.
        self.clock = SystemClock(spec, manifest, self.state) if spec.system.enabled else None
        phases.begin(f"starting {self.num_hosts} device hosts")  # a progress line; ends when the run starts
        self.backend = make_backend(
            spec,
            str(self.partition_dir),
            self.num_devices,
            self.num_hosts,
            ctx.scheduling_strategy,
            server_node=needs_server,
        )
        server = self.backend.server_access() if needs_server else None
        self.strategy = build_strategy(spec, self.num_devices, strategy_context(manifest, server))
        # What the round loop calls: the strategy, behind the clock's admission when the clock is on.
        self._round_strategy: Any = self.strategy if self.clock is None else ClockedSampling(self.strategy, self.clock)
        self._started: StartedRound | None = None

    @classmethod
    def steps(cls, spec: ExperimentSpec) -> int:
        return spec.federation.num_rounds

    def run_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"hosts": self.num_hosts, "devices": self.num_devices}
        if self.clock is not None:  # where the modelled clock stands (after a resume: the checkpoint's)
            info["sim_time_s"] = self.clock.sim_time_s
        return info

    def restore(self, ckpt: Checkpoint) -> None:
        self.state = ckpt.model
        self.strategy.load_state_dict(ckpt.extra.get("strategy", {}))
        self.backend.load_device_states(ckpt.extra.get(DEVICES_SECTION, {}))  # streamed: read chunk by chunk
        if self.clock is not None:
            self.clock.load_state_dict(ckpt.extra.get("system_clock"))

    def step(self, n: int) -> dict[str, Any]:
        # Round n+1 starts before round n's evaluation returns, unless a checkpoint (which must see the
        # hosts' device state after round n) or the end comes first.
        ahead = n < self.total_steps and not self.should_checkpoint(n)
        started, self._started = self._started, None
        result = run_round(self.spec, self._round_strategy, self.backend, self.state, n, started=started, ahead=ahead)
        self.state, self._started = result.state, result.following
        if self.clock is None:
            return result.record
        return {**result.record, **self.clock.finish(n, result.record, self.strategy)}

    def checkpoint_state(self) -> CheckpointState:
        # Device state (one entry per device) streams from the hosts to disk chunk by chunk; the written
        # checkpoint then becomes the copy restarted hosts are rebuilt from.
        return CheckpointState(
            self.state,
            {
                "strategy": self.strategy.state_dict(),
                **({"system_clock": self.clock.state_dict()} if self.clock is not None else {}),
            },
            {"partition": str(self.partition_dir)},
            sections={DEVICES_SECTION: self.backend.write_device_states},
            on_saved=self.backend.device_states_saved,
        )

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        spec, fed, plots = self.spec, self.spec.federation, self.ctx.run.plots
        records = list(records)
        panels: list[tuple[Any, ...]] = [("accuracy", ("test_accuracy",)), ("loss", ("test_loss", "train_loss"))]
        if self.clock is not None:  # accuracy against the deployment's modelled time too
            panels.append(("accuracy", ("test_accuracy",), "sim_time_s"))
        plot_curves(records, plots / "accuracy.png", title=f"{spec.name} ({self.strategy.name})", panels=panels)
        # Strategies with a server update (FedDU) log alpha_t and acc_t; the plot is skipped for the others.
        plot_curves(
            records,
            plots / "server_update.png",
            title=f"{spec.name}: server update",
            panels=(("alpha", ("alpha_t", "alpha_applied")), ("accuracy on D0", ("acc_t",))),
        )
        evaluated = [r for r in records if r.get("test_accuracy") is not None]
        per_class = self._final_per_class(plots)
        return {
            "strategy": self.strategy.describe(),
            "rounds": fed.num_rounds,
            "final_test_accuracy": evaluated[-1]["test_accuracy"] if evaluated else None,
            "final_test_loss": evaluated[-1]["test_loss"] if evaluated else None,
            "best_test_accuracy": max((r["test_accuracy"] for r in evaluated), default=None),
            "target_accuracy": fed.target_accuracy,
            "rounds_to_target": first_reaching(records, "test_accuracy", fed.target_accuracy),
            "median_round_seconds": float(np.median([r["round_seconds"] for r in records])) if records else None,
            "wall_time_to_target_s": time_to_accuracy(records, fed.target_accuracy, clock="round_seconds"),
            **self._clock_summary(records),
            "num_devices": self.num_devices,
            "num_hosts": self.num_hosts,
            "partition": str(self.partition_dir),
            **per_class,
        }

    def _clock_summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Modelled time in all, to the target, per round (median), and devices the deadline dropped."""
        if self.clock is None or not records:
            return {}
        return {
            "sim_time_s": records[-1].get("sim_time_s"),
            "sim_time_to_target_s": time_to_accuracy(records, self.spec.federation.target_accuracy),
            "median_sim_round_s": float(np.median([r.get("sim_round_s", np.nan) for r in records])),
            "devices_late": int(sum(r.get("devices_late", 0) for r in records)),
        }

    def _final_per_class(self, plots: Any) -> dict[str, Any]:
        """Per-class test accuracy and the confusion matrix of the final state; draws ``confusion.png``.

        The evaluator scores the final state once more (rounds keep only accuracy and loss in their
        records); only the K x K counts travel back. A failure here costs the per-class numbers, not
        the finished run.
        """
        try:
            scores = self.backend.evaluate(self.state)
        except Exception as err:  # noqa: BLE001 (every round is done and checkpointed already)
            logger.warning("no per-class test accuracy: the final evaluation failed (%s)", err)
            return {}
        matrix = scores.get("confusion_matrix")
        if matrix is None:  # an evaluator that does not count per class
            return {}
        names = list(load_partition_manifest(self.partition_dir).class_names)
        plot_confusion(
            matrix, names, plots / "confusion.png", title=f"{self.spec.name} ({self.strategy.name}), test split"
        )
        return {
            "class_names": names,
            "per_class_accuracy": dict(zip(names, scores["per_class_accuracy"], strict=True)),
            "confusion_matrix": matrix,
        }

    def close(self) -> None:
        if getattr(self, "backend", None) is not None:
            self.backend.shutdown()
