"""Many devices: partition, manifest load and a short run with 100,000 devices, with seconds and peak memory.

Steps, each in its own process so its peak RSS (``VmHWM``) is its own:

1. ``fedtwin data make moving-digits`` (16x16 clips, 2 per device; not reported, data only);
2. ``fedtwin data partition ... --devices N --scheme iid``: seconds and peak RSS;
3. loading the partition manifest (what the driver, every host and the evaluator do): seconds and RSS;
4. ``fedtwin run`` of FedAvg, tiny3d, one local step, ``--per-round`` devices per round for ``--rounds``
   rounds on one host per core: seconds, the driver's peak RSS and the largest host's.

    python benchmarks/bench_scale.py                      # 100,000 devices, 1,000 per round, 5 rounds
    python benchmarks/bench_scale.py --devices 10000 --per-round 1000
    python benchmarks/bench_scale.py --devices 10000 --per-round 1000 --rounds 10 --strategy scaffold \
        --output docs/results/scale_scaffold      # per-device state: also the hosts' and checkpoint's size
    python benchmarks/bench_scale.py --devices 10000 --per-round 1000 --rounds 10 --strategy fedavg \
        --output docs/results/scale_fedavg_10k    # the same size without per-device state (the baseline)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

RUN = """
import json, sys, time
sys.path.insert(0, {bench!r})
from bench_throughput import peak_rss_mb, ray_workers
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.experiment import run_experiment
hosts = []
class Peek(RunCallback):
    def on_step_end(self, step, metrics):
        if step == {rounds}:
            hosts.extend(peak_rss_mb(p) for p in ray_workers("DeviceHost"))
spec = ExperimentSpec.from_dict(json.loads({spec!r}))
started = time.perf_counter()
result = run_experiment(spec, callbacks=[Peek()])
print(json.dumps({{"seconds": time.perf_counter() - started, "driver_peak_rss_mb": peak_rss_mb(),
                  "host_peak_rss_mb": max(hosts, default=0.0), "run_dir": str(result.run_dir)}}))
"""

LOAD = """
import json, sys, time
sys.path.insert(0, {bench!r})
from bench_throughput import peak_rss_mb
before = peak_rss_mb()
started = time.perf_counter()
from fedtwin.pipelines.data.partition_manifest import load_partition_manifest
m = load_partition_manifest({part!r})
print(json.dumps({{"seconds": time.perf_counter() - started, "devices": m.num_devices,
                  "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before}}))
"""


def timed_child(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; its wall seconds, its peak RSS in MB (from ``wait4``) and its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, out


def checkpoint_mb(run_dir: Path) -> float:
    """Size of the run's newest checkpoint folder in MB."""
    folders = sorted((run_dir / "checkpoints").glob("*-*"))
    if not folders:
        return 0.0
    return sum(f.stat().st_size for f in folders[-1].rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--per-round", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--strategy", default="fedavg", help="strategy.name (e.g. scaffold: per-device state)")
    parser.add_argument("--output", default="docs/results/scale", help="writes OUTPUT.md and OUTPUT.json")
    args = parser.parse_args()
    bench = str(Path(__file__).resolve().parent)
    fedtwin = [sys.executable, "-m", "fedtwin.orchestrator.cli"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fedtwin-scale-") as tmp:
        data, part = f"{tmp}/digits", f"{tmp}/parts"
        per_class = args.devices * 2 // 10
        timed_child(
            [
                *fedtwin,
                "data",
                "make",
                "moving-digits",
                data,
                "--size",
                "16",
                "--digit-size",
                "8",
                "--train-per-class",
                str(per_class),
                "--test-per-class",
                "100",
            ]
        )
        part_s, part_rss, _ = timed_child(
            [
                *fedtwin,
                "data",
                "partition",
                data,
                part,
                "--devices",
                str(args.devices),
                "--scheme",
                "iid",
                "--seed",
                "0",
            ]
        )
        manifest_mb = Path(part, "manifest.json").stat().st_size / 1e6
        load = json.loads(timed_child([sys.executable, "-c", LOAD.format(bench=bench, part=part)])[2])
        spec = {
            "name": "scale",
            "recipe": "federated",
            "seed": 0,
            "data": {"path": part},
            "model": {"arch": "tiny3d"},
            "training": {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "max_steps": 1},
            "federation": {
                "num_rounds": args.rounds,
                "devices_per_round": args.per_round,
                "eval_every": args.rounds,
                "round_timeout_s": 1800,
            },
            "strategy": {"name": args.strategy},
            "resources": {"hosts": args.cores, "cpus_per_host": 1, "torch_threads": 1},
            "ray": {"num_cpus": args.cores},
            "run": {"output_dir": f"{tmp}/runs"},
        }
        env_cache = {**os.environ, "FEDTWIN_CACHE_DIR": f"{tmp}/cache"}
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", RUN.format(bench=bench, rounds=args.rounds - 1, spec=json.dumps(spec))],
            capture_output=True,
            text=True,
            env=env_cache,
            check=True,
        )
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        run["process_seconds"] = time.perf_counter() - started
        run["checkpoint_mb"] = checkpoint_mb(Path(run["run_dir"]))
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/bench_scale.py", *sys.argv[1:]]),
        "devices": args.devices,
        "clips_per_device": 2,
        "per_round": args.per_round,
        "rounds": args.rounds,
        "cores": args.cores,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "partition": {
            "seconds": round(part_s, 1),
            "peak_rss_mb": round(part_rss),
            "manifest_mb": round(manifest_mb, 1),
        },
        "manifest_load": {
            "seconds": round(load["seconds"], 2),
            "peak_rss_mb": round(load["peak_rss_mb"]),
            "rss_before_mb": round(load["rss_before_mb"]),
        },
        "run": {
            "seconds": round(run["seconds"], 1),
            "driver_peak_rss_mb": round(run["driver_peak_rss_mb"]),
            "host_peak_rss_mb": round(run["host_peak_rss_mb"]),
            "checkpoint_mb": round(run["checkpoint_mb"], 1),
        },
        "strategy": args.strategy,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    p, m, r = result["partition"], result["manifest_load"], result["run"]
    text = (
        f"# Many devices\n\nWritten by `{result['command']}` ({args.cores} cores; load average "
        f"{result['load_average_before'][0]} before, {result['load_average_after'][0]} after).\n\n"
        f"{args.devices:,} devices of 2 moving-digit clips (16x16, IID); {args.strategy}, tiny3d, one local step, "
        f"{args.per_round:,} devices per round, {args.rounds} rounds, {args.cores} device hosts.\n\n"
        "| step | seconds | peak RSS (MB) |\n|---|---|---|\n"
        f"| `fedtwin data partition` (manifest.json {p['manifest_mb']} MB) | {p['seconds']} | {p['peak_rss_mb']} |\n"
        f"| load the partition manifest (process RSS before: {m['rss_before_mb']} MB) | {m['seconds']} | "
        f"{m['peak_rss_mb']} |\n"
        f"| `run_experiment` ({args.rounds} rounds; Ray start-up, device stores built in round 1, final "
        f"evaluation) | {r['seconds']} | driver {r['driver_peak_rss_mb']}, largest host {r['host_peak_rss_mb']} |\n"
        f"\nThe run's last checkpoint (model, strategy state and every device's local state): "
        f"{r['checkpoint_mb']} MB.\n"
    )
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
