"""What every recipe receives from ``run_experiment``."""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.callbacks import CallbackList
from fedtwin.orchestrator.run.run_folder import RunFolder


@dataclass
class RecipeContext:
    """The spec, the run folder, the callbacks, and whether to resume from the last checkpoint."""

    spec: ExperimentSpec
    run: RunFolder
    callbacks: CallbackList
    resume: bool = False
    cluster_resources: dict[str, float] = field(default_factory=dict)
    scheduling_strategy: Any = None  # set inside a Tune trial's placement group
    started: float = field(default_factory=time.time)


def versions() -> dict[str, str]:
    """Library versions for summaries (what produced these numbers)."""
    import numpy
    import pyarrow
    import ray
    import torch

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
    }


def first_reaching(
    records: Sequence[Mapping[str, Any]], key: str, target: float | None, step_key: str = "round"
) -> int | None:
    """The first step whose ``key`` reached ``target`` (None if never, or no target)."""
    if target is None:
        return None
    for record in records:
        value = record.get(key)
        if value is not None and value >= target:
            return int(record[step_key])
    return None
