"""What one run reserves on a cluster: placement-group bundles, driver first, then its actors.

Each recipe declares its footprint (:meth:`fedtwin.orchestrator.recipes.base.Recipe.footprint`); a Tune trial
reserves it as one placement group, so a trial starts only when its whole footprint is free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Bundle = dict[str, float]


@dataclass(frozen=True)
class Footprint:
    """The placement-group bundles of one run: the driver first, then the recipe's actors (hosts first)."""

    bundles: tuple[Bundle, ...]
    hosts: int

    @property
    def total(self) -> Bundle:
        """Sum over bundles."""
        out: Bundle = {}
        for one in self.bundles:
            for key, value in one.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def describe(self) -> str:
        """``driver {CPU: 1} + 2 hosts x {CPU: 0.5} + server {GPU: 0.25}``."""
        driver, rest = self.bundles[0], self.bundles[1:]
        parts = [f"driver {describe_bundle(driver)}"]
        if self.hosts and rest and len(rest) >= self.hosts:
            parts.append(f"{self.hosts} hosts x {describe_bundle(rest[0])}")
            rest = rest[self.hosts :]
        label = "server" if self.hosts else "actor"  # after device hosts comes their server node
        parts += [f"{label} {describe_bundle(b)}" for b in rest]
        return " + ".join(parts)


def bundle(cpus: float, gpus: float) -> Bundle:
    """A bundle of ``cpus`` CPUs and ``gpus`` GPUs; empty when both are 0 (Ray rejects empty bundles)."""
    out: Bundle = {}
    if cpus > 0:
        out["CPU"] = float(cpus)
    if gpus > 0:
        out["GPU"] = float(gpus)
    return out


def describe_bundle(bundle: Mapping[str, float]) -> str:
    """``{CPU: 1, GPU: 0.5}``."""
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items())) + "}"
