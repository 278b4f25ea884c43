"""Recipe ``mutual``: twin co-training with mutual pseudo-labels (MMT-style mean teachers).

1. Data: clean source clips (``data.generator``) and a shifted target domain (``twin.target``); the
   quality filter (``twin.adaptation.q_min``) picks the unlabelled target clips, in a Ray task.
2. Two ``TwinNetworkActor`` s (or one, for the self-training baseline) load the data themselves and
   pre-train on the source, each from its own seed. The fair baseline (``networks: 1``,
   ``pretrain.candidates: 2``) pre-trains both and keeps the one with the lower pre-training loss.
3. Every epoch: the twins' EMA models embed the target clips; a clustering task turns those feature
   references into pseudo-labels (``cross`` or ``shared``) and scores them against the hidden labels;
   for MMT each twin computes soft targets for its peer; the twins train one pass on their labels.
   The driver passes object references from call to call and reads only small reports.
4. After the last epoch: a final clustering, then the final model: the lower-loss EMA model
   (``select``) or a convergence-weighted fusion fine-tuned on the last pseudo-labels (``fuse``).

Checkpoints hold both twins (weights, EMA, optimiser moments, labels, EMA step) and the clustering's
fixed K / eps; every random stream derives from ``(seed, twin, epoch)``, so a resumed run replays the
remaining epochs exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
from safetensors.numpy import save_file

from fedtwin.actors.mutual.clustering_task import ClusterRequest
from fedtwin.actors.mutual.ray_actors import (
    TwinNetworkActor,
    cluster_epoch_task,
    load_hidden_labels_task,
    select_quality_task,
)
from fedtwin.actors.placement import actor_options, trainer_gpus
from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.recipes import builtin_sections
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.base import CheckpointState
from fedtwin.orchestrator.recipes.feature_model import FeatureModelRecipe
from fedtwin.orchestrator.recipes.mutual.setup import prepare_domains
from fedtwin.orchestrator.run import actor_calls
from fedtwin.orchestrator.run.checkpoint import Checkpoint
from fedtwin.orchestrator.run.context import RecipeContext
from fedtwin.orchestrator.run.footprint import Bundle, Footprint, bundle
from fedtwin.orchestrator.run.plots import plot_curves
from fedtwin.pipelines.core.atomic_write import write_with
from fedtwin.pipelines.mutual.twin_training import convergence_weights, select_final

logger = logging.getLogger(__name__)

PANELS = (
    ("pseudo-labels vs hidden labels", ("pseudo_nmi", "pseudo_acc", "twin_agreement")),
    ("target test (Hungarian acc)", ("test_acc_a", "test_acc_b")),
    ("training loss", ("loss_a", "loss_b")),
)


class _Twins:
    """The twin actors and the driver-side bookkeeping of one run (references, K, eps)."""

    def __init__(self, ctx: RecipeContext, source_dir: str, target_dir: str, kept_ref: Any) -> None:
        spec, tw = ctx.spec, ctx.spec.twin
        self.ctx = ctx
        self.timeout = tw.timeout_s
        res = spec.resources
        # With a GPU in the cluster (and no Tune placement group deciding), the twins share it.
        gpus = trainer_gpus(
            res.gpus_per_host,
            ctx.cluster_resources.get("GPU", 0.0),
            ctx.scheduling_strategy is not None,
            share=1.0 / tw.pretrained_networks,
        )
        options = actor_options(
            num_cpus=res.cpus_per_host,
            num_gpus=gpus,
            max_restarts=0,
            scheduling_strategy=ctx.scheduling_strategy,
            plugin_paths=spec.plugins.paths,
        )
        # A restarted twin would come back without its weights, so twins are not restarted (max_restarts=0).
        # Handles are Any: Ray's stubs give a method ``.remote`` only under ``@ray.method``, and the plain
        # class stays importable without Ray.
        self.actors: list[Any] = [
            TwinNetworkActor.options(**options).remote(
                tw, j, spec.seed, spec.model, res.torch_threads, source_dir, target_dir, kept_ref
            )
            for j in range(tw.pretrained_networks)
        ]
        #: For networks: 1 with pretrain.candidates: 2, the index (0 = a, 1 = b) of the network kept.
        self.kept: int | None = None
        self.task_options: dict[str, Any] = {"num_cpus": spec.resources.server_cpus}
        if ctx.scheduling_strategy is not None:
            self.task_options["scheduling_strategy"] = ctx.scheduling_strategy
        self.previous: list[Any] = [None, None]
        self.num_clusters: int | None = None
        self.eps: float | None = None

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)

    def keep(self, index: int) -> None:
        """Keep only pre-trained candidate ``index`` (networks: 1 with ``pretrain.candidates: 2``)."""
        for j, actor in enumerate(self.actors):
            if j != index:
                ray.kill(actor)
        self.actors, self.kept = [self.actors[index]], index

    def get(self, refs: Any, what: str) -> Any:
        """Results of twin calls or tasks under ``twin.timeout_s``; a lost twin is one line, exit 1
        (twins are not restarted: their weights live only in their process)."""
        return actor_calls.get(refs, what=what, timeout_s=self.timeout)

    def cluster(self, epoch: int, hidden_ref: Any) -> tuple[list[Any], dict[str, Any]]:
        """Embed with the EMA models and cluster; returns assignment refs and the (small) report."""
        tw = self.ctx.spec.twin
        feats = [a.embed.remote() for a in self.actors]
        request = ClusterRequest(
            tw.effective_label_mode,
            tw.clustering,
            seed=self.ctx.spec.seed * 100_003 + epoch,
            num_clusters=self.num_clusters,
            eps=self.eps,
            oracle=tw.adaptation.labels == "oracle",
        )
        a_ref, b_ref, report_ref = cluster_epoch_task.options(**self.task_options).remote(
            feats[0], feats[1] if len(feats) > 1 else None, request, self.previous[0], self.previous[1], hidden_ref
        )
        report = self.get(report_ref, "clustering task")
        self.num_clusters, self.eps = int(report["num_clusters"]), report["eps"]
        assignments = [a_ref, b_ref][: len(self.actors)]
        return assignments, report

    def train(self, epoch: int, assignments: list[Any]) -> list[dict[str, Any]]:
        """One epoch on the assignments; MMT first asks each twin for its soft targets (``loss.teacher``:
        handed to the peer, or kept by the twin itself)."""
        tw = self.ctx.spec.twin
        peers: list[Any] = [None] * len(self.actors)
        if tw.loss.kind == "mmt" and (len(self.actors) == 2 or tw.loss.teacher == "self"):
            targets = [a.peer_targets.remote(asg, epoch) for a, asg in zip(self.actors, assignments, strict=True)]
            peers = targets if tw.loss.teacher == "self" else [targets[1], targets[0]]
        refs = [
            a.train_epoch.remote(asg, peer, epoch=epoch)
            for a, asg, peer in zip(self.actors, assignments, peers, strict=True)
        ]
        results = self.get(refs, "twins: train_epoch")
        self.previous = list(assignments) + [None] * (2 - len(assignments))
        return results

    def evaluate(self) -> list[dict[str, float]]:
        return self.get([a.evaluate_test.remote() for a in self.actors], "twins: evaluate_test")

    def states(self) -> list[dict[str, Any]]:
        return self.get([a.get_state.remote() for a in self.actors], "twins: get_state")

    def restore(self, extra: dict[str, Any]) -> None:
        if extra.get("kept") is not None and len(self.actors) > 1:
            self.keep(int(extra["kept"]))
        states = [extra["twins"][str(j)] for j in range(len(self.actors))]
        self.get([a.set_state.remote(s) for a, s in zip(self.actors, states, strict=True)], "twins: set_state")
        self.previous = [ray.put(np.asarray(s["labels"])) for s in states] + [None] * (2 - len(states))
        self.num_clusters = extra["clustering"].get("num_clusters")
        self.eps = extra["clustering"].get("eps")


def _suffixed(values: dict[str, Any], suffix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f"{k}_{suffix}": v for k, v in values.items() if k not in skip}


class MutualRecipe(FeatureModelRecipe):
    """Twin co-training: pre-train two networks (step 0), then one epoch of mutual pseudo-labels per step."""

    name = "mutual"
    unit = "epoch"
    sections = builtin_sections("mutual")
    step_count = "twin.adaptation.epochs"
    warmup = True

    @classmethod
    def footprint(cls, spec: ExperimentSpec, driver: Bundle) -> Footprint:
        """The driver, one bundle per twin network and one for the clustering tasks."""
        res, tw = spec.resources, spec.twin
        twin = bundle(res.cpus_per_host, res.gpus_per_host)
        tasks = bundle(res.server_cpus, 0.0)
        return Footprint(
            (driver, *([twin] * tw.pretrained_networks if twin else []), *([tasks] if tasks else [])), hosts=0
        )

    def setup(self) -> None:
        spec, tw = self.spec, self.spec.twin
        self.twins: _Twins | None = None
        self.source_dir, self.target_dir = (str(d) for d in prepare_domains(spec))
        options: dict[str, Any] = {"num_cpus": spec.resources.server_cpus}
        if self.ctx.scheduling_strategy is not None:
            options["scheduling_strategy"] = self.ctx.scheduling_strategy
        q_min = tw.adaptation.q_min
        kept_ref, quality_ref = select_quality_task.options(**options).remote(self.target_dir, q_min)
        self.quality = actor_calls.get(quality_ref, what="quality selection task", timeout_s=tw.timeout_s)
        if self.quality["kept"] < 2:
            q = self.quality
            raise ConfigError(
                f"twin.adaptation.q_min={q_min} keeps {q['kept']:.0f} of {q['clips']:.0f} target clips "
                f"(scores {q['score_min']:.3f}..{q['score_max']:.3f}); lower it"
            )
        self.hidden_ref = load_hidden_labels_task.options(**options).remote(self.target_dir, kept_ref)
        self.twins = _Twins(self.ctx, self.source_dir, self.target_dir, kept_ref)

    def run_info(self) -> dict[str, Any]:
        return {"twins": self.spec.twin.networks}

    def restore(self, ckpt: Checkpoint) -> None:
        assert self.twins is not None
        self.twins.restore(ckpt.extra)

    def step(self, n: int) -> dict[str, Any]:
        assert self.twins is not None
        return self._pretrain() if n == 0 else self._epoch(n)

    def _pretrain(self) -> dict[str, Any]:
        twins = self.twins
        assert twins is not None
        results = twins.get([a.pretrain.remote() for a in twins.actors], "twins: pretrain")
        record: dict[str, Any] = {"phase": "pretrain", **{f"quality_{k}": v for k, v in self.quality.items()}}
        for name, result in zip("ab", results, strict=False):
            record.update(_suffixed(result, name))
        record["test_accuracy"] = float(np.mean([r["test_acc"] for r in results]))
        if self.spec.twin.networks < len(results):  # the fair baseline: keep the lower-loss candidate
            kept = select_final([r["pretrain_loss"] for r in results])
            twins.keep(kept)
            # From here on the kept network's records carry the suffix _a (it is the only network).
            record.update({"pretrain_kept": "ab"[kept], "test_accuracy": float(results[kept]["test_acc"])})
        return record

    def _epoch(self, epoch: int) -> dict[str, Any]:
        twins = self.twins
        assert twins is not None
        started = time.perf_counter()
        assignments, report = twins.cluster(epoch, self.hidden_ref)
        trained = time.perf_counter()
        results = twins.train(epoch, assignments)
        train_seconds = time.perf_counter() - trained
        tests = twins.evaluate()
        record: dict[str, Any] = {"phase": "adapt", **report}
        for name, result, test in zip("ab", results, tests, strict=False):
            record.update(_suffixed(result, name, skip=("examples",)))
            record.update(_suffixed(test, name))
        record["test_accuracy"] = float(np.mean([t["test_acc"] for t in tests]))
        record["train_seconds"] = train_seconds
        record["epoch_seconds"] = time.perf_counter() - started
        return record

    def checkpoint_state(self) -> CheckpointState:
        twins = self.twins
        assert twins is not None
        states = twins.states()
        extra = {
            "twins": {str(j): s for j, s in enumerate(states)},
            "clustering": {"num_clusters": twins.num_clusters, "eps": twins.eps},
            "kept": twins.kept,
        }
        return CheckpointState(states[0]["ema"], extra)

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        spec, tw = self.spec, self.spec.twin
        final = self._finish()
        adapt = [r for r in records if r.get("phase") == "adapt"]
        plot_curves(
            adapt,
            self.ctx.run.plots / "mutual.png",
            x="epoch",
            panels=PANELS,
            title=f"{spec.name} ({tw.label_mode if tw.networks == 2 else 'single'}, {tw.loss.kind})",
        )
        pre = next((r for r in records if r.get("phase") == "pretrain"), {})
        names = pre.get("pretrain_kept") or "ab"[: tw.networks]  # the pre-trained network(s) the run went on with
        first = adapt[0] if adapt else {}
        return {
            "networks": tw.networks,
            "label_mode": tw.effective_label_mode,
            "loss": tw.loss.kind,
            "ema": {"unit": tw.ema.unit, "momentum": tw.ema.momentum},
            "epochs": tw.adaptation.epochs,
            "final": tw.final.mode,
            **final,
            "initial_pseudo_nmi": first.get("pseudo_nmi"),
            "initial_pseudo_acc": first.get("pseudo_acc"),
            "initial_target_acc": pre.get("test_accuracy"),
            "pretrain_kept": pre.get("pretrain_kept"),
            "source_test_accuracy": [pre.get(f"source_test_accuracy_{n}") for n in names],
            "source_only_target_accuracy": [pre.get(f"source_only_target_accuracy_{n}") for n in names],
            "quality": self.quality,
            "median_epoch_seconds": float(np.median([r["epoch_seconds"] for r in adapt])) if adapt else None,
            "source": self.source_dir,
            "target": self.target_dir,
        }

    def _finish(self) -> dict[str, Any]:
        """Final clustering of the trained EMA models, then select or fuse; saves ``final_model.safetensors``."""
        twins, tw = self.twins, self.spec.twin
        assert twins is not None
        assignments, report = twins.cluster(tw.adaptation.epochs + 1, self.hidden_ref)
        losses = [float(s["last_loss"]) for s in twins.states()]
        out: dict[str, Any] = {f"final_{k}": v for k, v in report.items() if k.startswith(("pseudo_", "twin_"))}
        if tw.final.mode == "fuse":
            weights = convergence_weights(losses)
            peer_ref = twins.actors[1].ema_state.remote()
            final = twins.get(
                twins.actors[0].fuse_and_finetune.remote(
                    peer_ref, (float(weights[0]), float(weights[1])), assignments[0], tw.final.finetune_epochs
                ),
                "twin a: fuse_and_finetune",
            )
            chosen, out["fusion_weights"] = 0, [float(w) for w in weights]
        else:
            chosen = select_final(losses)
            final = twins.get(twins.actors[chosen].evaluate_test.remote(), "twins: evaluate_test")
        state = twins.get(twins.actors[chosen].ema_state.remote(), "twins: ema_state")
        path = self.ctx.run.path / "final_model.safetensors"
        write_with(path, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp))
        out.update(
            {
                "final_losses": losses,
                "selected_twin": "ab"[chosen],
                "final_target_acc": final["test_acc"],
                "final_target_nmi": final["test_nmi"],
                "final_target_ari": final["test_ari"],
                "final_model": str(path),
            }
        )
        return out

    def close(self) -> None:
        twins = getattr(self, "twins", None)  # None until setup, absent if __init__ failed early
        if twins is not None:
            twins.shutdown()
