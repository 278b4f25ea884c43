"""What a new user sees: ``fedtwin run configs/quickstart.yaml`` on a fresh data folder, read from the CLI's
real output (a subprocess on embedded Ray): only fedtwin's own lines (a progress line per start-up phase,
then the rounds), Ray's messages in the run's ``ray.log``, TensorBoard scalars readable by TensorBoard.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
#: The quickstart, made small: fewer clips and devices, two rounds (same recipe, strategy and hosts).
SMALL = [
    "federation.num_rounds=2",
    "federation.devices_per_round=4",
    "data.generator.train_per_class=40",
    "data.generator.test_per_class=10",
    "data.partition.devices=8",
]
PHASES = ["starting Ray", "generating demo data (first use)", "partitioning", "starting 2 device hosts"]
#: Every line fedtwin itself prints during a run; anything else came from Ray (or a library).
FEDTWIN_LINES = [
    re.compile(r"^[A-Za-z][A-Za-z0-9 ()-]* \| \d+\.\ds$"),  # a start-up phase: "partitioning | 0.3s"
    re.compile(r"^fedtwin: federated -> \S+$"),
    re.compile(r"^round \d+/\d+ \[[#-]+\] \| devices \d+/\d+ ok \| \d+\.\ds \| acc \d\.\d{3} \| eta \d+s$"),
    re.compile(r"^  checkpoint \S+$"),
    re.compile(r"^done: \S+ \| final test accuracy \d\.\d{4} \| \d+s$"),
]


def fedtwin(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_TMPDIR=tempfile.mkdtemp(prefix="fedtwin-ray-"))
    env.pop("RAY_ADDRESS", None)  # embedded Ray
    # A user's fresh shell: ray.init() in this test process (the shared ray_session) exports
    # RAY_AUTH_MODE=token, and a child that inherits it starts without Ray's token warning.
    env.pop("RAY_AUTH_MODE", None)
    return subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """One small quickstart run on a fresh data folder: (completed process, run folder)."""
    tmp = tmp_path_factory.mktemp("first-minutes")
    proc = fedtwin(
        "run",
        "configs/quickstart.yaml",
        "--output",
        str(tmp / "runs"),
        "--set",
        f"data.root={tmp / 'data'}",
        *SMALL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp / "runs").iterdir()
    return proc, run_dir


def test_embedded_ray_prints_no_line_of_its_own(quickstart):
    proc, _ = quickstart
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    foreign = [line for line in lines if not any(p.match(line) for p in FEDTWIN_LINES)]
    assert foreign == []
    assert len(lines) >= len(PHASES) + 4  # phases, header, two rounds, done


def test_a_progress_line_per_start_up_phase_before_round_1(quickstart):
    proc, _ = quickstart
    lines = proc.stderr.splitlines()
    phase_lines = [line for line in lines if FEDTWIN_LINES[0].match(line)]
    assert [line.rsplit(" | ", 1)[0] for line in phase_lines] == PHASES
    assert all(float(line.rsplit(" | ", 1)[1][:-1]) >= 0 for line in phase_lines)
    first_round = next(i for i, line in enumerate(lines) if line.startswith("round 1/"))
    assert all(lines.index(line) < first_round for line in phase_lines)


def test_rays_messages_go_to_the_runs_log_file(quickstart):
    _, run_dir = quickstart
    text = (run_dir / "ray.log").read_text()
    assert "Token authentication is enabled" in text  # the warning the terminal no longer shows
    assert "Started a local Ray instance" in text


def test_tensorboard_reads_the_accuracy_scalars(quickstart):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = quickstart
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert "test_accuracy" in events.Tags()["scalars"]
    got = [(e.step, e.value) for e in events.Scalars("test_accuracy")]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    want = [(r["round"], r["test_accuracy"]) for r in records]
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)


def test_quiet_prints_no_phase_or_round_line(tmp_path):
    # The in-process backend: the data phases happen (a fresh data folder), no Ray is needed.
    proc = fedtwin(
        "run",
        "configs/quickstart.yaml",
        "--quiet",
        "--output",
        str(tmp_path / "runs"),
        "--set",
        f"data.root={tmp_path / 'data'}",
        "resources.backend=local",
        *SMALL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip() == ""
    assert proc.stdout.startswith("done: ") and len(proc.stdout.splitlines()) == 1


def test_ray_log_sink_holds_records_until_the_run_folder_exists(tmp_path, capsys):
    from fedtwin.orchestrator.run.ray_logs import RayLogSink

    ray_logger = logging.getLogger("ray.fedtwin_test")
    # ray.init() earlier in this process (the shared ray_session) sets the "ray" logger's level; this
    # test is about where records go, so its own logger passes every level through.
    ray_logger.setLevel(logging.INFO)
    terminal = logging.StreamHandler(sys.stderr)
    parent = logging.getLogger("ray")
    parent.addHandler(terminal)
    try:
        quiet = RayLogSink(show=False)
        quiet.install()
        ray_logger.warning("before the folder")
        quiet.attach(tmp_path)
        ray_logger.info("after the folder")
        quiet.close()
        ray_logger.warning("after close")
        shown = RayLogSink(show=True)
        shown.install()
        ray_logger.warning("shown with -v")
        shown.close()
    finally:
        parent.removeHandler(terminal)
        ray_logger.setLevel(logging.NOTSET)
    log = (tmp_path / "ray.log").read_text()
    assert "before the folder" in log and "after the folder" in log and "after close" not in log
    err = capsys.readouterr().err
    assert "before the folder" not in err and "after the folder" not in err
    assert "after close" in err and "shown with -v" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_phase_lines_in_a_log_and_on_a_terminal(tty):
    from fedtwin.orchestrator.run import phases
    from fedtwin.orchestrator.run.progress import ProgressPrinter

    stream = _Terminal() if tty else io.StringIO()
    printer = ProgressPrinter(stream)
    with pytest.raises(RuntimeError), phases.reporting([phases.EndPhasesOnRunStart(), printer]):
        with phases.phase("generating demo data (first use)"):
            pass
        phases.begin("starting 2 device hosts")  # open until the run starts
        phases.EndPhasesOnRunStart().on_run_start({})
        with phases.phase("partitioning"):
            raise RuntimeError("failed")  # a failed phase gets no line
    shown = stream.getvalue()
    if tty:  # each phase shows while it runs, then its line is drawn over it
        assert "\rgenerating demo data (first use) ..." in shown and "\rpartitioning ..." in shown
        shown = "\n".join(line.rsplit("\r", 1)[-1] for line in shown.split("\n"))
    lines = [line for line in shown.split("\n") if line.strip()]
    assert [line.rsplit(" | ", 1)[0] for line in lines] == [
        "generating demo data (first use)",
        "starting 2 device hosts",
    ]
    assert all(re.fullmatch(r"\d+\.\ds", line.rsplit(" | ", 1)[1]) for line in lines)


def test_phases_outside_a_run_cost_nothing():
    from fedtwin.orchestrator.run import phases

    with phases.phase("partitioning"):
        phases.begin("starting Ray")
    phases.end()  # nobody listens: no error, nothing printed
