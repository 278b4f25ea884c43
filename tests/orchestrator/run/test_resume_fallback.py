"""``fedtwin run --resume`` over a damaged newest checkpoint: it falls back to the newest checkpoint that
checks out, says so in one warning line, and ends bit-identical to a run that was never interrupted.

Real federated runs on the in-process backend (``resources.backend: local``: the resume path is the
same loop as on Ray), real Parquet shards and torch; the resumes are real ``fedtwin`` processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, list_checkpoints
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder
from tests.orchestrator.recipes.federated.test_federated_ray import tiny_spec
from tests.orchestrator.run.test_checkpoint import DAMAGE

ROOT = Path(__file__).resolve().parents[3]
OVERRIDES = {
    "federation.num_rounds": 5,
    "federation.devices_per_round": 6,
    "training.epochs": 1,
    "strategy.name": "fedavgm",  # strategy state must come back too
    "resources.backend": "local",
    "run.keep_checkpoints": 2,
}


class _DieAfterCheckpoint(RunCallback):
    def on_checkpoint(self, step, path):
        if step == 3:
            raise KeyboardInterrupt  # the driver dies right after round 3's checkpoint


@pytest.fixture(scope="module")
def runs(tiny_data_root, tmp_path_factory):
    """An uninterrupted 5-round run, and a run folder whose driver died after round 3 (checkpoints 2, 3)."""
    tmp = tmp_path_factory.mktemp("fallback")
    full = run_experiment(tiny_spec(tiny_data_root, tmp / "full", **OVERRIDES))
    spec = tiny_spec(tiny_data_root, tmp / "crashed", **OVERRIDES)
    folder = RunFolder.create(spec.run.output_dir, spec.name)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, run_dir=folder.path, callbacks=[_DieAfterCheckpoint()])
    assert [p.name for p in list_checkpoints(folder.checkpoints)] == ["step-00002", "step-00003"]
    return Path(full.run_dir), folder.path


def _resume(run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", "run", "--resume", str(run_dir), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.parametrize("how", ["truncated", "bytes-flipped", "file-missing"])
def test_resume_skips_a_damaged_newest_checkpoint_with_one_warning_and_ends_bit_identical(runs, tmp_path, how):
    # Prepare: a copy of the crashed run whose newest checkpoint (round 3) is damaged
    full, crashed = runs
    run_dir = Path(shutil.copytree(crashed, tmp_path / crashed.name))
    damage, reason = DAMAGE[how]
    damage(run_dir / "checkpoints" / "step-00003")
    # Execute
    proc = _resume(run_dir)
    # Assert: one warning line naming the skipped checkpoint and why, then rounds 3..5 replayed
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "skipped damaged checkpoint step-00003" in lines[0] and reason in lines[0]
    assert lines[0].endswith("resuming from round 2"), lines[0]
    a, b = latest_checkpoint(full / "checkpoints"), latest_checkpoint(run_dir / "checkpoints")
    assert a.step == b.step == 5
    assert a.model.keys() == b.model.keys()
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], b.model[key])
    ra, rb = RunFolder(full).read_metrics(), RunFolder(run_dir).read_metrics()
    assert [r["round"] for r in rb] == [1, 2, 3, 4, 5]
    assert [r["test_accuracy"] for r in ra] == [r["test_accuracy"] for r in rb]
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step-00004", "step-00005"]


def test_resume_with_no_usable_checkpoint_is_one_line_exit_2_and_changes_nothing(runs, tmp_path):
    # Prepare: both checkpoints damaged
    _, crashed = runs
    run_dir = Path(shutil.copytree(crashed, tmp_path / crashed.name))
    DAMAGE["truncated"][0](run_dir / "checkpoints" / "step-00003")
    DAMAGE["bytes-flipped"][0](run_dir / "checkpoints" / "step-00002")
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    # Execute
    proc = _resume(run_dir)
    # Assert
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("fedtwin: error: --resume ") and "no usable checkpoint" in lines[0]
    assert "step-00003 (model.safetensors has" in lines[0] and "step-00002 (state.safetensors" in lines[0]
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
