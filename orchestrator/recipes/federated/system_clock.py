"""The modelled clock in the federated recipe (``system:``), and the slow devices it drops.

:class:`SystemClock` holds the run's drawn fleet (device speeds and links), the model's counted FLOPs
and the cumulative modelled time. Each round it is asked twice:

1. when the round samples its devices (:class:`ClockedSampling` wraps the strategy's
   ``sample_devices``): it models every sampled device's download + training + upload and keeps
   those that make ``federation.deadline_s``, at most ``devices_per_round`` of them (the fastest,
   after over-selection). The model needs no training to know who is late, so the late devices are
   never dispatched: the strategy, the hosts and the devices' local state see only the devices that
   made it, as if the others had not reported;
2. when the round's record is ready (:meth:`SystemClock.finish`): it adds the server's time (folding,
   FedDU's server pass and its evaluations on D0, from the record) to the slowest reporting device's
   time and returns ``sim_round_s``, ``sim_time_s`` and what was dropped.

The arithmetic is :mod:`fedtwin.pipelines.federated.system_model`; ``docs/system_model.md`` explains it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.config import ProfileConfig, SystemConfig
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.data.partition_manifest import PartitionManifest
from fedtwin.pipelines.federated.system_model import (
    Admission,
    DeviceFleet,
    DeviceTime,
    Profile,
    admit,
    device_time,
    examples_processed,
    fold_flops,
    read_table,
    round_time,
    state_bytes,
    time_to_accuracy,
)
from fedtwin.pipelines.model.flops import StepFlops, count_step_flops
from fedtwin.pipelines.model.networks import build_model
from fedtwin.pipelines.model.state import ModelState

#: Unit conversions of the ``system:`` keys: GFLOP/s to FLOP/s, Mbit/s to bytes/s.
GFLOPS, MBPS = 1e9, 1e6 / 8


def clocked_devices_per_round(spec: ExperimentSpec) -> int:
    """Devices a round samples: ``devices_per_round``, times ``1 + over_select`` with the clock on."""
    fed = spec.federation
    if not spec.system.enabled:
        return fed.devices_per_round
    return math.ceil(fed.devices_per_round * (1 + fed.over_select) - 1e-9)


def _profile(cfg: ProfileConfig, where: str) -> Profile:
    if cfg.kind != "csv":
        return Profile(cfg.kind, cfg.value, cfg.sigma)
    try:
        return Profile("table", table=read_table(str(cfg.path)))
    except ValueError as err:
        raise ConfigError(f"{where}.path: {err}") from None


@dataclass(frozen=True)
class _RoundPlan:
    """What the clock decided when round ``n`` sampled its devices."""

    sampled: tuple[int, ...]
    admission: Admission
    times: Mapping[int, DeviceTime]
    extra_values: int  # numbers of the strategy's extra payload (each way)


class SystemClock:
    """The run's modelled deployment and its running time (see the module docstring)."""

    def __init__(self, spec: ExperimentSpec, manifest: PartitionManifest, state: ModelState) -> None:
        cfg: SystemConfig = spec.system
        self.spec = spec
        seed = spec.seed if cfg.seed is None else cfg.seed
        speed = _profile(cfg.device_gflops, "system.device_gflops")
        down = _profile(cfg.download_mbps, "system.download_mbps")
        up = _profile(cfg.upload_mbps, "system.upload_mbps")
        try:
            self.fleet = DeviceFleet.draw(
                manifest.num_devices, seed, speed=speed, download=down, upload=up, scale=(GFLOPS, MBPS, MBPS)
            )
        except ValueError as err:
            raise ConfigError(f"system: {err}") from None
        batch = spec.training.batch_size
        if cfg.flops_per_step is not None:
            self.flops = StepFlops(train=cfg.flops_per_step, forward=cfg.flops_per_step / 3, batch_size=batch)
        else:
            self.flops = count_step_flops(build_model(spec.model, seed=spec.seed), manifest.clip_shape, batch)
        self.server_speed = cfg.server_gflops * GFLOPS
        self.device_examples = np.asarray(manifest.num_examples, dtype=np.int64)
        self.server_examples = int(manifest.shared.num_examples)
        self.weight_values = int(sum(np.asarray(v).size for v in state.values()))
        self.weight_bytes = state_bytes(state)
        self.sim_time_s = 0.0
        self._plans: dict[int, _RoundPlan] = {}

    # ------------------------------------------------------------------ devices
    def train_flops(self, device_id: int) -> float:
        """FLOPs of device ``device_id``'s local training in a round (``training.*`` settings)."""
        t = self.spec.training
        seen = examples_processed(int(self.device_examples[device_id]), t.epochs, t.batch_size, t.max_steps)
        return seen * self.flops.train_per_example

    def device_time(self, device_id: int, extra_bytes: int = 0) -> DeviceTime:
        """Device ``device_id``'s modelled round with ``extra_bytes`` of strategy payload each way."""
        payload = self.weight_bytes + extra_bytes
        return device_time(
            self.fleet,
            device_id,
            train_flops=self.train_flops(device_id),
            download_bytes=payload,
            upload_bytes=payload,
        )

    def plan(self, round_num: int, sampled: Sequence[int], payload: Mapping[str, ModelState]) -> list[int]:
        """Model round ``round_num``'s sampled devices and return those that train (sorted).

        Raises:
            FedtwinError: every sampled device misses ``federation.deadline_s``.
        """
        fed = self.spec.federation
        extra_bytes = sum(state_bytes(p) for p in payload.values())
        extra_values = int(sum(np.asarray(v).size for p in payload.values() for v in p.values()))
        times = {int(d): self.device_time(int(d), extra_bytes) for d in sampled}
        admission = admit({d: t.total_s for d, t in times.items()}, fed.devices_per_round, fed.deadline_s)
        if not admission.kept:
            fastest = min(t.total_s for t in times.values())
            raise FedtwinError(
                f"round {round_num}: all {len(times)} sampled devices miss federation.deadline_s={fed.deadline_s} "
                f"(the fastest needs {fastest:.3g} s of modelled time); raise the deadline or over-select"
            )
        self._plans[round_num] = _RoundPlan(tuple(int(d) for d in sampled), admission, times, extra_values)
        return list(admission.kept)

    # ------------------------------------------------------------------ server
    def server_flops(self, record: Mapping[str, Any], strategy: Any, reporting: int, extra_values: int) -> float:
        """The server's FLOPs in a round: folding ``reporting`` results, and FedDU's work on D0 where the
        record shows it (``acc_t``: an evaluation; ``server_loss_after``: the revert guard's; ``tau0``
        without ``skipped``: a server pass)."""
        flops = fold_flops(self.weight_values + extra_values, reporting)
        evaluations = ("acc_t" in record) + ("server_loss_after" in record)
        flops += evaluations * self.server_examples * self.flops.forward_per_example
        if "tau0" in record and not record.get("skipped", False):
            settings = getattr(strategy, "server_settings", None)
            if settings is not None:
                s = settings()
                seen = examples_processed(self.server_examples, s.epochs, s.batch_size, s.max_steps)
            else:  # a strategy that logs tau0 but has no FedDU settings: tau0 steps at the training batch
                seen = int(record["tau0"]) * self.spec.training.batch_size
            flops += seen * self.flops.train_per_example
        return flops

    # ------------------------------------------------------------------ the round's record
    def finish(self, round_num: int, record: Mapping[str, Any], strategy: Any) -> dict[str, Any]:
        """Round ``round_num``'s modelled time and drops, for its record; advances the clock."""
        plan = self._plans.pop(round_num, None)
        if plan is None:
            raise RuntimeError(f"round {round_num} was not planned by the modelled clock")
        failed = set(int(d) for d in record.get("failed_devices", ()))
        reporting = [d for d in plan.admission.kept if d not in failed]
        slowest = max((plan.times[d].total_s for d in reporting), default=0.0)
        server_s = self.server_flops(record, strategy, len(reporting), plan.extra_values) / self.server_speed
        sim_round = round_time((plan.times[d].total_s for d in reporting), server_s)
        self.sim_time_s += sim_round
        return {
            "sim_round_s": sim_round,
            "sim_time_s": self.sim_time_s,
            "sim_slowest_device_s": slowest,
            "sim_server_s": server_s,
            "devices_sampled": len(plan.sampled),
            "devices_late": len(plan.admission.late),
            "late_devices": list(plan.admission.late),
            "devices_surplus": len(plan.admission.surplus),
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, float]:
        """The running modelled time (the fleet is redrawn from the seed on resume)."""
        return {"sim_time_s": self.sim_time_s}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Continue from a checkpoint's modelled time.

        Raises:
            FedtwinError: the checkpoint was written without the clock.
        """
        if not state or "sim_time_s" not in state:
            raise FedtwinError(
                "system.enabled: the checkpoint holds no modelled time (the run started with the clock off); "
                "resume with the configuration it started with"
            )
        self.sim_time_s = float(state["sim_time_s"])


def run_time_to_accuracy(
    run_dir: str | Path, target: float, *, key: str = "test_accuracy", clock: str = "sim_time_s"
) -> float | None:
    """Modelled time (``clock="sim_time_s"``) or wall-clock time (``clock="round_seconds"``) until a run's
    ``key`` first reached ``target``, read from the run folder's ``metrics.jsonl``; None if it never did.

    For studies: ``run_time_to_accuracy(result.run_dir, 0.8)``.
    """
    from fedtwin.orchestrator.run.run_folder import RunFolder

    return time_to_accuracy(RunFolder(run_dir).read_metrics(), target, key=key, clock=clock)


class ClockedSampling:
    """A strategy whose ``sample_devices`` returns only the devices the clock admits; all else delegates.

    The round loop calls it like the strategy itself, so the strategy's ``configure_fit``,
    ``aggregate_fit`` and state never see a dropped device.
    """

    def __init__(self, strategy: Any, clock: SystemClock) -> None:
        self._strategy = strategy
        self._clock = clock

    def sample_devices(self, round_num: int, rng: np.random.Generator) -> list[int]:
        """The strategy's sample (over-selected), minus the devices the clock drops."""
        sampled = self._strategy.sample_devices(round_num, rng)
        return self._clock.plan(round_num, sampled, self._strategy.round_payload(round_num))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._strategy, name)
