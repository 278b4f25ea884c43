"""Fault drill: SIGKILL random device hosts from outside while ``fedtwin run`` trains, and compare the run
with the same run without kills.

Both runs are real ``fedtwin run`` commands (embedded Ray, two device hosts). The drill run is watched
from outside: every ``--every`` seconds (+-20%, seeded jitter) one of its ``ray::DeviceHost`` processes,
chosen at random, gets SIGKILL, ``--kills`` times, starting once the first round is written. Nothing
inside fedtwin knows about it. Writes ``docs/results/drill.json`` and ``docs/results/drill.md``: exit
codes, whether any traceback was printed, rounds finished, kills, device retries and host restarts
(from ``metrics.jsonl``), final accuracies and wall times.

    python benchmarks/drill_kills.py [--config configs/quickstart.yaml] [--kills 8] [--every 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.result_paths import portable_text  # noqa: E402
from fedtwin.orchestrator.run.reaper import load_psutil  # noqa: E402

RESULTS = ROOT / "docs" / "results"


def _start(config: str, out: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "fedtwin.orchestrator.cli",
        "run",
        config,
        "--output",
        str(out),
        "--quiet",
        "--set",
        "resources.hosts=2",
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _host_pids(driver_pid: int) -> list[int]:
    psutil = load_psutil()
    pids = []
    try:
        children = psutil.Process(driver_pid).children(recursive=True)
    except psutil.Error:
        return pids
    for child in children:
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0].startswith("ray::DeviceHost"):
            pids.append(child.pid)
    return sorted(pids)


def _metrics(out: Path) -> list[dict[str, Any]]:
    files = list(out.glob("*/metrics.jsonl"))
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def _finish(proc: subprocess.Popen, out: Path, started: float) -> dict[str, Any]:
    stdout, stderr = proc.communicate()
    records = _metrics(out)
    evaluated = [r for r in records if r.get("test_accuracy") is not None]
    return {
        "exit_code": proc.returncode,
        "traceback": "Traceback" in stderr,
        "stderr_tail": [portable_text(line) for line in stderr.strip().splitlines()[-3:]],
        "rounds": len(records),
        "final_test_accuracy": evaluated[-1]["test_accuracy"] if evaluated else None,
        "device_retries": sum(r.get("device_retries", 0) for r in records),
        "host_restarts": sum(r.get("host_restarts", 0) for r in records),
        "server_restarts": sum(r.get("server_restarts", 0) for r in records),
        "devices_failed": sum(r.get("devices_failed", 0) for r in records),
        "rounds_with_retries": [r["round"] for r in records if r.get("device_retries")],
        "slowest_round_seconds": round(max((r.get("round_seconds", 0.0) for r in records), default=0.0), 1),
        "median_round_seconds": round(sorted(r.get("round_seconds", 0.0) for r in records)[len(records) // 2], 1)
        if records
        else None,
        "wall_seconds": round(time.monotonic() - started, 1),
        "done_line": portable_text(stdout.strip().splitlines()[-1]) if stdout.strip() else "",
    }


def run_plain(config: str, out: Path, extra: list[str]) -> dict[str, Any]:
    """The run without kills."""
    started = time.monotonic()
    return _finish(_start(config, out, extra), out, started)


def run_drill(config: str, out: Path, extra: list[str], kills: int, every: float, seed: int) -> dict[str, Any]:
    """The same run, with ``kills`` SIGKILLs of random device hosts from outside."""
    import os
    import signal

    rng = random.Random(seed)
    started = time.monotonic()
    proc = _start(config, out, extra)
    while proc.poll() is None and not _metrics(out):  # hosts are up and round 1 is done
        time.sleep(0.2)
    log: list[dict[str, Any]] = []
    while proc.poll() is None and len(log) < kills:
        time.sleep(every * rng.uniform(0.8, 1.2))
        pids = _host_pids(proc.pid)
        while proc.poll() is None and not pids:  # both hosts restarting: wait for one
            time.sleep(0.1)
            pids = _host_pids(proc.pid)
        if not pids:
            break
        pid = rng.choice(pids)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        log.append({"at_s": round(time.monotonic() - started, 1), "pid": pid, "round": len(_metrics(out)) + 1})
    result = _finish(proc, out, started)
    result["kills"] = len(log)
    result["kill_log"] = log
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between kills (+-20%%)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra --set KEY=VALUE for both runs")
    args = parser.parse_args()
    extra = ["--set", *args.overrides] if args.overrides else []
    with tempfile.TemporaryDirectory(prefix="fedtwin-drill-") as tmp:
        plain = run_plain(args.config, Path(tmp) / "plain", extra)
        print(f"without kills: {plain}", flush=True)
        drill = run_drill(args.config, Path(tmp) / "drill", extra, args.kills, args.every, args.seed)
        print(f"with kills:    {drill}", flush=True)
    gap = None
    if plain["final_test_accuracy"] is not None and drill["final_test_accuracy"] is not None:
        gap = round(100 * (drill["final_test_accuracy"] - plain["final_test_accuracy"]), 2)
    report = {
        "config": args.config,
        "hosts": 2,
        "kills_requested": args.kills,
        "every_s": args.every,
        "seed": args.seed,
        "overrides": args.overrides,
        "without_kills": plain,
        "with_kills": drill,
        "accuracy_gap_points": gap,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drill.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "drill.md").write_text(_markdown(report))
    ok = (
        drill["exit_code"] == 0
        and not drill["traceback"]
        and drill["rounds"] == plain["rounds"]
        and gap is not None
        and abs(gap) <= 3.0
    )
    print(f"drill {'passed' if ok else 'FAILED'}: accuracy gap {gap} points; docs/results/drill.md")
    return 0 if ok else 1


def _acc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _markdown(r: dict[str, Any]) -> str:
    p, d = r["without_kills"], r["with_kills"]
    rows = [
        ("exit code", p["exit_code"], d["exit_code"]),
        ("traceback printed", p["traceback"], d["traceback"]),
        ("rounds finished", p["rounds"], d["rounds"]),
        ("host processes SIGKILLed", 0, d["kills"]),
        ("device retries", p["device_retries"], d["device_retries"]),
        ("host restarts (comebacks the driver waited for)", p["host_restarts"], d["host_restarts"]),
        ("devices failed (after retries)", p["devices_failed"], d["devices_failed"]),
        ("final test accuracy", _acc(p["final_test_accuracy"]), _acc(d["final_test_accuracy"])),
        (
            "median / slowest round (s)",
            f"{p['median_round_seconds']} / {p['slowest_round_seconds']}",
            f"{d['median_round_seconds']} / {d['slowest_round_seconds']}",
        ),
        ("wall time of the command (s)", p["wall_seconds"], d["wall_seconds"]),
    ]
    table = "\n".join(f"| {name} | {a} | {b} |" for name, a, b in rows)
    kills = ", ".join(f"{k['at_s']} s (round {k['round']})" for k in d["kill_log"])
    return f"""# Fault drill: device hosts SIGKILLed from outside

`python benchmarks/drill_kills.py --config {r["config"]} --kills {r["kills_requested"]} --every {r["every_s"]} \
--seed {r["seed"]}`: the same `fedtwin run` twice on embedded Ray with 2 device hosts; in the second
one a random `ray::DeviceHost` process gets SIGKILL every ~{r["every_s"]} s from outside, starting after
round 1. See [`docs/failures.md`](../failures.md).

| | without kills | with kills |
|---|---|---|
{table}

Accuracy gap (with - without): **{r["accuracy_gap_points"]} points**. Kills at: {kills}. Rounds with
retries: {d["rounds_with_retries"]}.
"""


if __name__ == "__main__":
    sys.exit(main())
