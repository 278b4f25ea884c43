"""``fedtwin run`` on embedded Ray leaves no process behind, however it ends: success (through a drill of
process kills, exit 0), a failed round (exit 1), Ctrl-C (exit 130) and a SIGKILL of the driver itself.

Each test watches only the process tree of the ``fedtwin`` it started (psutil), never other Ray."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.run.reaper import load_psutil

psutil = load_psutil()

ROOT = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path, data_root: Path, **federation) -> Path:
    cfg = {
        "name": "exit",
        "seed": 3,
        "data": {
            "root": str(data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": 10, "scheme": "iid", "seed": 0},
        },
        "training": {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 0.003},
        "federation": {"num_rounds": 3, "devices_per_round": 10, "round_timeout_s": 120, **federation},
        "resources": {"hosts": 2},
        "ray": {"num_cpus": 2},
        "run": {"output_dir": str(tmp_path / "runs"), "checkpoint_every": 2},
    }
    path = tmp_path / "exit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ``fedtwin`` with Ctrl-C's usual meaning. A shell without job control starts background commands with
# SIGINT ignored, and a child inherits that: a test suite run in the background (`... &`) would otherwise
# start a ``fedtwin`` that cannot be interrupted, as a user's background job is meant to be.
_CLI = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from fedtwin.orchestrator.cli.main import main; sys.exit(main())"
)


class _Watched:
    """A ``fedtwin run`` subprocess whose descendants are recorded while it runs."""

    def __init__(self, cfg: Path, drill: dict | None = None) -> None:
        command = ["run", str(cfg), "--quiet"]
        if drill is not None:  # `fedtwin drill PLAN CONFIG ...`: the same run with the plan's faults
            plan = cfg.parent / "drill.yaml"
            plan.write_text(yaml.safe_dump(drill))
            command = ["drill", str(plan), *command[1:]]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLI, *command],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: dict[int, tuple[float, str]] = {}  # pid -> (start time, command line)
        self.runs = cfg.parent / "runs"

    def record(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    if child.pid not in self.seen:
                        self.seen[child.pid] = (child.create_time(), " ".join(child.cmdline())[:120])
                except psutil.Error:
                    continue
        except psutil.Error:
            pass

    def wait_for_metrics(self, timeout_s: float = 240) -> None:
        """Record descendants until the first round is written (or the process ends)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.record()
            if any(p.stat().st_size for p in self.runs.glob("*/metrics.jsonl")):
                return
            time.sleep(0.2)

    def finish(self, timeout_s: float = 240) -> tuple[int, str]:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.record()
            time.sleep(0.2)
        _, err = self.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        return self.proc.returncode, err

    def leftovers(self, wait_s: float = 20) -> list[str]:
        """Recorded descendants still alive after ``wait_s`` (the watcher gets a moment to clean up)."""
        deadline = time.monotonic() + wait_s
        while True:
            alive = []
            for pid, (started, cmd) in self.seen.items():
                try:
                    proc = psutil.Process(pid)
                    if abs(proc.create_time() - started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{pid} {cmd}")
                except psutil.Error:
                    continue
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)

    def kill_leftovers(self) -> None:
        """Only if a test failed: stop what this test's run left, by pid."""
        for pid, (started, _) in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - started) < 0.01:
                    proc.kill()
            except psutil.Error:
                continue


@pytest.fixture
def watched():
    runs = []

    def start(cfg, drill=None):
        runs.append(_Watched(cfg, drill))
        return runs[-1]

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
        run.kill_leftovers()


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err[-3000:]


def test_a_drill_with_kills_exits_0_and_leaves_nothing(tmp_path, tiny_data_root, watched):
    # Prepare: two hosts killed in one round, the server before an evaluation
    kills = [
        {"round": 1, "host": 0, "phase": "fit"},
        {"round": 1, "host": 1, "phase": "fit", "after_devices": 3},
        {"round": 2, "target": "server", "phase": "evaluate"},
    ]
    run = watched(_config(tmp_path, tiny_data_root), drill={"kills": kills})
    # Execute
    code, err = run.finish()
    # Assert
    assert code == 0, err[-3000:]
    _no_traceback(err)
    assert run.seen and not run.leftovers()
    records = [yaml.safe_load(line) for line in next(run.runs.glob("*/metrics.jsonl")).read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3] and all(r["devices_ok"] == 10 for r in records)
    assert records[0]["device_retries"] == 10 and records[1]["server_restarts"] == 1


def test_a_failed_round_exits_1_in_one_line_and_leaves_nothing(tmp_path, tiny_data_root, watched):
    run = watched(_config(tmp_path, tiny_data_root, min_success_fraction=1.0), drill={"fail_devices": [3]})
    code, err = run.finish()
    assert code == 1 and err.strip().splitlines()[-1].startswith("fedtwin: error: round 1: only 9/10")
    _no_traceback(err)
    assert run.seen and not run.leftovers()
    assert not list(run.runs.glob("*"))  # nothing finished: no half-made run folder either


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path, tiny_data_root, watched):
    run = watched(_config(tmp_path, tiny_data_root, num_rounds=30))
    run.wait_for_metrics()
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish()
    assert code == 130 and "fedtwin: interrupted" in err
    _no_traceback(err)
    assert run.seen and not run.leftovers()


def test_sigkill_of_the_driver_leaves_no_ray_process(tmp_path, tiny_data_root, watched):
    # Prepare
    run = watched(_config(tmp_path, tiny_data_root, num_rounds=30))
    run.wait_for_metrics()
    run.record()
    # Execute: the driver dies without a word (Ray alone would leave its agents running)
    run.proc.kill()
    run.proc.wait(timeout=30)
    # Assert: the agents that Ray alone leaves behind were there, and nothing outlived the driver
    agents = ("DashboardAgent", "RuntimeEnvAgent", "dashboard/agent.py", "runtime_env/agent")
    assert any(name in cmd for _, cmd in run.seen.values() for name in agents), run.seen
    assert not run.leftovers(), "Ray processes outlived their SIGKILLed driver"
