"""Recipe ``mutual`` end to end on a real (small) Ray instance: two twin actors, cross labels, MMT loss."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder


def tiny_mutual_spec(data_root, out_dir, **overrides) -> ExperimentSpec:
    """60 source and 60 target clips of 4 frames, a 2-stage tiny3d; a few seconds per epoch on 2 cores."""
    base = {
        "name": "tiny-mutual",
        "recipe": "mutual",
        "seed": 1,
        "data": {"root": str(data_root), "generator": {"frames": 4, "train_per_class": 6, "test_per_class": 3}},
        "model": {"widths": [4, 8], "frames": 4},
        "twin": {
            "pretrain": {"epochs": 1, "batch_size": 16},
            "adaptation": {"epochs": 2, "batch_size": 16},
            "label_mode": "cross",
            "loss": {"kind": "mmt"},
            "clustering": {"num_clusters": 5},
        },
        "resources": {"cpus_per_host": 1.0},
        "run": {"output_dir": str(out_dir), "checkpoint_every": 1},
    }
    return ExperimentSpec.from_dict(base).with_overrides(overrides)


def _arrays(value):
    """Every numpy array inside a (nested) ray.get result."""
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _arrays(v)
    elif hasattr(value, "__dataclass_fields__"):
        yield from _arrays(vars(value))


@pytest.fixture(scope="module")
def cross_run(ray_session, tiny_data_root, tmp_path_factory):
    """One uninterrupted 2-epoch run, shared by the tests below; records what the driver ray.get-s."""
    fetched: list[np.ndarray] = []
    real_get = ray_session.get

    def recording_get(refs, *args, **kwargs):
        out = real_get(refs, *args, **kwargs)
        fetched.extend(_arrays(out))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray_session, "get", recording_get)
        result = run_experiment(tiny_mutual_spec(tiny_data_root, tmp_path_factory.mktemp("mutual-full")))
    result.summary["_fetched"] = fetched
    return result


def test_two_twins_cross_labels_come_from_the_peer_and_metrics_are_logged(cross_run):
    # Execute (fixture)
    result = cross_run

    # Assert: one pre-training line and two epoch lines with the pseudo-label metrics
    records = RunFolder(result.run_dir).read_metrics()
    assert [(r["epoch"], r["phase"]) for r in records] == [(0, "pretrain"), (1, "adapt"), (2, "adapt")]
    for record in records[1:]:
        for key in (
            "pseudo_nmi",
            "pseudo_ari",
            "pseudo_acc",
            "twin_agreement",
            "num_clusters",
            "loss_a",
            "loss_b",
            "soft_ce_a",
            "soft_tri_b",
            "test_acc_a",
            "test_acc_b",
        ):
            assert np.isfinite(record[key]), key
        assert record["num_clusters"] == 5
        # Cross mode: each twin's labels were clustered from the features its PEER's EMA returned
        assert record["label_source_a"] == record["embedding_b"] != record["embedding_a"]
        assert record["label_source_b"] == record["embedding_a"]
    assert records[0]["quality_kept"] == 60 and records[0]["source_test_accuracy_a"] >= 0
    # Summary, final model, plot and per-epoch checkpoints
    summary = result.summary
    assert summary["selected_twin"] in ("a", "b") and 0 <= summary["final_target_acc"] <= 1
    losses = summary["final_losses"]
    assert summary["selected_twin"] == "ab"[int(np.argmin(losses))]
    assert summary["initial_pseudo_nmi"] == records[1]["pseudo_nmi"]
    assert "head.weight" in load_file(summary["final_model"])
    assert (result.run_dir / "plots" / "mutual.png").is_file()
    assert latest_checkpoint(result.run_dir / "checkpoints").round_num == 2
    # The driver fetched weights, labels and scalars, never a per-clip float matrix (features, targets)
    per_clip = [a.shape for a in summary["_fetched"] if a.ndim == 2 and a.shape[0] == 60 and a.dtype.kind == "f"]
    assert summary["_fetched"] and per_clip == []


class _CrashAfter(RunCallback):
    """Simulates the driver dying right after an epoch was checkpointed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, step, path):
        if step == self.step:
            raise KeyboardInterrupt


# ~20-35 s on 2 cores on top of the run above; `pytest -m slow tests/orchestrator/recipes/mutual/test_mutual_ray.py`
@pytest.mark.slow
def test_resume_after_interruption_replays_the_same_epochs(cross_run, tiny_data_root, tmp_path):
    # Prepare: the same spec, killed after epoch 1's checkpoint
    spec = tiny_mutual_spec(tiny_data_root, tmp_path)
    folder = RunFolder.create(spec.run.output_dir, spec.name)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, run_dir=folder.path, callbacks=[_CrashAfter(1)])

    # Execute
    resumed = run_experiment(spec, run_dir=folder.path, resume=True)

    # Assert: same metric history and bit-identical final weights as the uninterrupted run
    full = RunFolder(cross_run.run_dir).read_metrics()
    again = RunFolder(resumed.run_dir).read_metrics()
    assert [r["epoch"] for r in again] == [0, 1, 2]
    for key in ("pseudo_nmi", "loss_a", "loss_b", "test_acc_a", "label_source_a"):
        assert again[2][key] == full[2][key], key
    a = latest_checkpoint(cross_run.run_dir / "checkpoints")
    b = latest_checkpoint(resumed.run_dir / "checkpoints")
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], b.model[key])
    assert resumed.summary["final_target_acc"] == cross_run.summary["final_target_acc"]


def test_fair_single_network_keeps_the_lower_loss_twin_and_teaches_itself(cross_run, tiny_data_root, tmp_path):
    # Prepare: one network picked from the twins' two pre-trained candidates, MMT loss against its own EMA
    spec = tiny_mutual_spec(
        tiny_data_root,
        tmp_path,
        **{"twin.networks": 1, "twin.pretrain.candidates": 2, "twin.loss.teacher": "self", "twin.label_mode": "shared"},
    )

    # Execute
    result = run_experiment(spec)

    # Assert: both candidates pre-trained exactly as the twins of the same seed were, the lower loss kept
    records = RunFolder(result.run_dir).read_metrics()
    twins_pre = RunFolder(cross_run.run_dir).read_metrics()[0]
    pre = records[0]
    losses = [pre["pretrain_loss_a"], pre["pretrain_loss_b"]]
    assert losses == [twins_pre["pretrain_loss_a"], twins_pre["pretrain_loss_b"]]
    kept = "ab"[int(np.argmin(losses))]
    assert pre["pretrain_kept"] == kept == result.summary["pretrain_kept"]
    assert pre["test_accuracy"] == twins_pre[f"test_acc_{kept}"]
    assert result.summary["source_only_target_accuracy"] == [twins_pre[f"source_only_target_accuracy_{kept}"]]
    # One network trains from here, on its own EMA's soft targets
    for record in records[1:]:
        assert "loss_b" not in record and np.isfinite(record["soft_ce_a"]) and np.isfinite(record["soft_tri_a"])
    assert result.summary["networks"] == 1 and result.summary["label_mode"] == "self"


# ~40-60 s on 2 cores; `pytest -m slow tests/orchestrator/recipes/mutual/test_mutual_ray.py`
@pytest.mark.slow
def test_fair_single_network_resumes_with_the_network_it_kept(ray_session, tiny_data_root, tmp_path):
    # Prepare: the fair baseline, once straight through and once killed after epoch 1's checkpoint
    overrides = {"twin.networks": 1, "twin.pretrain.candidates": 2, "twin.loss.kind": "hard"}
    full = run_experiment(tiny_mutual_spec(tiny_data_root, tmp_path / "full", **overrides))
    spec = tiny_mutual_spec(tiny_data_root, tmp_path / "cut", **overrides)
    folder = RunFolder.create(spec.run.output_dir, spec.name)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, run_dir=folder.path, callbacks=[_CrashAfter(1)])

    # Execute
    resumed = run_experiment(spec, run_dir=folder.path, resume=True)

    # Assert: the resumed run went on with the same kept network and replays epoch 2 exactly
    again, straight = RunFolder(resumed.run_dir).read_metrics(), RunFolder(full.run_dir).read_metrics()
    assert [r["epoch"] for r in again] == [0, 1, 2]
    for key in ("pseudo_nmi", "loss_a", "test_acc_a", "label_source_a"):
        assert again[2][key] == straight[2][key], key
    assert resumed.summary["final_target_acc"] == full.summary["final_target_acc"]
