"""The recipe contract: what a training recipe implements so that one loop can run, resume and tune it.

A recipe is a class with a few declarations and a handful of methods. The loop
(:func:`fedtwin.orchestrator.run.loop.run_recipe`) owns everything generic: resume and metrics truncation,
callbacks, checkpoint cadence, progress, the common summary fields and the shutdown. A recipe owns its
actors and its science::

    class MyRecipe(Recipe):
        name = "my_recipe"
        unit = "round"                              # what one step is called in metrics and progress
        sections = {"my_recipe": MyRecipeConfig}    # top-level YAML sections this recipe owns

        @classmethod
        def preflight(cls, spec): ...               # optional: checks before the run folder exists
        def setup(self): ...                        # data, actors (self.ctx has the run folder, Ray facts)
        @classmethod
        def steps(cls, spec): ...                   # how many steps a run of spec has
        def step(self, n): ...                      # one unit of work -> metrics record (a dict)
        def checkpoint_state(self): ...             # -> CheckpointState(model, extra, meta)
        def restore(self, ckpt): ...                # inverse of checkpoint_state (ckpt.step: the step it follows)
        def summary(self, records): ...             # recipe-specific summary fields (and plots)
        def close(self): ...                        # always called; stop actors

Recipes are found by name (built-ins, the ``fedtwin.recipes`` entry-point group) or by import path
(``recipe: "my_pkg.recipes:MyRecipe"``); see ``docs/extending.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.footprint import Bundle, Footprint, bundle

if TYPE_CHECKING:
    from fedtwin.orchestrator.run.checkpoint import Checkpoint
    from fedtwin.orchestrator.run.checkpoint_sections import SectionWriter
    from fedtwin.orchestrator.run.context import RecipeContext


@dataclass(frozen=True)
class CheckpointState:
    """What a recipe saves at a checkpoint.

    Attributes:
        model: the model weights (a dict of numpy arrays), saved with safetensors.
        extra: nested dicts of numpy arrays and JSON scalars (strategy state, device state, ...).
        meta: JSON-safe facts about the checkpoint (file names, dataset paths).
        sections: state too large to hold at once (one entry per device), by name: a callback that writes
            it chunk by chunk (``SectionWriter.write``); on restore ``ckpt.extra[name]`` is a
            ``StreamedSection`` (see ``fedtwin.orchestrator.run.checkpoint_sections``).
        on_saved: called with the checkpoint's folder once it is complete (e.g. to use it as a recovery copy).
    """

    model: Mapping[str, np.ndarray]
    extra: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    sections: Mapping[str, Callable[[SectionWriter], None]] = field(default_factory=dict)
    on_saved: Callable[[Path], None] | None = None


class Recipe(ABC):
    """Base class of every recipe. ``__init__`` only stores; work starts in :meth:`setup`.

    Class attributes:
        name: the registry name (``recipe:`` in YAML).
        unit: what one step is called (``round``, ``epoch``, ``task``, ``session``); it is also the step
            key of every ``metrics.jsonl`` record and the word progress lines use. Generic names stay
            generic: callbacks get ``on_step_end`` and checkpoints are ``checkpoints/step-NNNNN`` for
            every unit.
        sections: the top-level YAML sections this recipe owns, mapped to their frozen dataclasses. A spec
            holds the common sections plus these, and no other recipe's.
        warmup: True when the recipe has a step 0 (e.g. pre-training) that runs once before step 1, is
            written to the metrics and checkpointed, but is not reported to callbacks.
        retired_keys: dotted keys the recipe no longer reads, mapped to what to do instead. A config
            file that sets one is a one-line error saying so; a stored ``spec.yaml`` of an older run
            loads with a one-line warning and the key ignored, so old runs still resume.
    """

    name: ClassVar[str]
    unit: ClassVar[str] = "step"
    sections: ClassVar[Mapping[str, type]] = {}
    warmup: ClassVar[bool] = False
    retired_keys: ClassVar[Mapping[str, str]] = {}

    def __init__(self, spec: ExperimentSpec, ctx: RecipeContext) -> None:
        self.spec = spec
        self.ctx = ctx

    # ------------------------------------------------------------------ declarations
    @classmethod  # noqa: B027 (an optional hook: empty by design)
    def validate(cls, spec: ExperimentSpec) -> None:
        """Checks across sections, run when a spec is loaded (raise ``ConfigError`` naming the field)."""

    @classmethod
    def preflight(cls, spec: ExperimentSpec) -> None:
        """Check ``spec`` against the outside world before the run folder exists; start and write nothing.

        Called by ``run_experiment`` before Ray is connected and before the run folder is created, so
        input that cannot work (a missing or broken ``data.path``, sizes the data cannot meet) is one
        line and exit 2, and leaves no run folder. The default runs the checks every recipe shares
        (:func:`fedtwin.orchestrator.run.preflight.check_common`: ``run.output_dir``, ``data.path`` and its
        manifest and clip files, ``data.dataset``). Override it (calling ``super().preflight(spec)``)
        for recipe checks; raise ``FedtwinError``/``ConfigError`` naming the field. After Ray is
        connected, ``run_experiment`` also checks that the :meth:`footprint` fits an embedded cluster.
        It ends with :meth:`check_model`.
        """
        from fedtwin.orchestrator.run.preflight import check_common

        check_common(spec)
        cls.check_model(spec)

    @classmethod  # noqa: B027 (an optional hook: empty by design)
    def check_model(cls, spec: ExperimentSpec) -> None:
        """Checks of ``spec.model`` that import torch, so loading a spec does not run them: ``preflight``
        and a sweep's loading (for the base and every searched value) do. Raise ``ConfigError`` naming
        the field. The default checks nothing beyond what loading checked (``model.arch`` resolves)."""

    @classmethod
    def needs_ray(cls, spec: ExperimentSpec) -> bool:
        """Whether a run of ``spec`` needs a Ray connection (False for fully in-process runs)."""
        return True

    @classmethod
    def target(cls, spec: ExperimentSpec) -> float | None:
        """The accuracy a run of ``spec`` aims at, if any (the default objective target of a sweep)."""
        return None

    @classmethod
    def footprint(cls, spec: ExperimentSpec, driver: Bundle) -> Footprint:
        """The placement-group bundles one Tune trial of ``spec`` must reserve: the driver, then actors.

        The default reserves one trainer actor of ``resources.cpus_per_host`` / ``gpus_per_host``.
        """
        res = spec.resources
        actor = bundle(res.cpus_per_host, res.gpus_per_host)
        return Footprint((driver, *([actor] if actor else [])), hosts=0)

    # ------------------------------------------------------------------ lifecycle
    @abstractmethod
    def setup(self) -> None:
        """Prepare data and start actors. Called once, before :meth:`restore` or the first step."""

    @classmethod
    @abstractmethod
    def steps(cls, spec: ExperimentSpec) -> int:
        """How many steps (1..steps, after the warm-up step 0 if any) a run of ``spec`` has."""

    @property
    def total_steps(self) -> int:
        """``steps(spec)`` of this run."""
        return self.steps(self.spec)

    def run_info(self) -> dict[str, Any]:
        """Extra facts for ``on_run_start`` callbacks and the progress banner (hosts, devices, ...)."""
        return {}

    @abstractmethod
    def step(self, n: int) -> dict[str, Any]:
        """Run step ``n`` (0 only for warm-up recipes) and return its metrics record."""

    def should_checkpoint(self, n: int) -> bool:
        """Whether to checkpoint after step ``n``: every ``run.checkpoint_every`` steps and the last one."""
        return n % self.spec.run.checkpoint_every == 0 or n == self.total_steps

    @abstractmethod
    def checkpoint_state(self) -> CheckpointState:
        """Everything needed to continue after the current step exactly."""

    @abstractmethod
    def restore(self, ckpt: Checkpoint) -> None:
        """Load what :meth:`checkpoint_state` saved (called after :meth:`setup`, before the next step)."""

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Recipe-specific summary fields from all metric records (also the place to draw plots)."""
        return {}

    def close(self) -> None:  # noqa: B027 (an optional hook: empty by design)
        """Stop actors and release resources; always called, also after an error."""
