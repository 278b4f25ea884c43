"""Devices per second of fedtwin against this machine's compute limit, side by side in one run.

For each workload the same federated rounds run three ways, each in its own process:

- **fedtwin**: ``run_experiment`` on an embedded Ray with one device host per core (one torch thread
  each), FedAvg, evaluation only after the last round;
- **limit**: one worker process per core, one torch thread each, every device of its share already in
  memory, training its devices of each round one after another with the same ``local_train`` (with a
  ``TrainWorkspace``, its cheapest way), the same per-(run, round, device) seeds, the same model and
  the same FedAvg fold; no Ray, no files, no evaluation. Its final weights are compared with fedtwin's
  (``same weights``);
- **pool** (``--pool``): a per-client actor pool, the common way to simulate federated learning on Ray:
  a Ray ``ActorPool`` of one actor per core, each task one device (read its shard, build the model,
  train, return its weights), the driver averages every device's weights.

Round times are the driver's intervals between consecutive round ends (everything between rounds
counts); medians over rounds 2..R-1 (round 1 includes start-up and building the hosts' device stores,
round R the evaluation) of ``--repeats`` runs per side, fedtwin and the limit alternating so that a
drift in the machine's speed hits both; the ratio is also given per back-to-back pair. ``busy`` is the
time inside the hosts' (the limit workers') round calls per device: it says whether a gap to the limit
is inside the training calls or between them. ``host idle`` is fedtwin's mean gap between a host finishing one round and
starting the next, on the hosts' own clocks. Peak RSS is ``VmHWM`` (driver: the run's process; hosts:
the largest device host). With CUDA, ``--gpus-per-host 1 0.5 0.25`` repeats fedtwin at those fractions
and reports GPU memory per host (``nvidia-smi``).

    python benchmarks/bench_throughput.py --pool            # all workloads, ~10 min on 2 cores
    python benchmarks/bench_throughput.py --workloads tiny3d-step --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput_baselines, next to this file

#: name -> (model widths (None: tiny3d default), local steps (None: one full epoch), devices per round)
WORKLOADS: dict[str, tuple[tuple[int, ...] | None, int | None, int]] = {
    "tiny3d-step": (None, 1, 200),
    "tiny3d-epoch": (None, None, 200),
    "0.6MB-step": ((32, 64, 128), 1, 200),
    "0.6MB-epoch": ((32, 64, 128), None, 200),
    "2.5MB-step": ((64, 128, 256), 1, 100),
    "2.5MB-epoch": ((64, 128, 256), None, 100),
}
DEVICES = 1000
CLIPS_PER_DEVICE = 32  # one local epoch = 2 steps of 16
SEED = 0


def spec_dict(workload: str, args: argparse.Namespace, gpus: float = 0.0) -> dict[str, Any]:
    widths, steps, per_round = WORKLOADS[workload]
    hosts = args.cores
    if gpus:  # as many hosts as the GPUs hold at this fraction (and no more than the cores)
        import torch

        hosts = max(1, min(args.cores, int(torch.cuda.device_count() / gpus)))
    return {
        "name": f"bench-{workload}",
        "recipe": "federated",
        "seed": SEED,
        "data": {
            "root": args.data_root,
            "seed": 0,
            "generator": {"train_per_class": DEVICES * CLIPS_PER_DEVICE // 10, "test_per_class": 100},
            "partition": {"devices": DEVICES, "scheme": "iid", "seed": 0},
        },
        "model": {"arch": "tiny3d", **({"widths": list(widths)} if widths else {})},
        "training": {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "max_steps": steps},
        "federation": {
            "num_rounds": args.rounds,
            "devices_per_round": per_round,
            "eval_every": args.rounds,
            "round_timeout_s": 900,
        },
        "strategy": {"name": "fedavg"},
        "resources": {"hosts": hosts, "cpus_per_host": 1, "torch_threads": 1, "gpus_per_host": gpus},
        "ray": {"num_cpus": args.cores},
        "run": {"output_dir": args.run_root, "checkpoint_every": 10_000, "keep_checkpoints": 1},
    }


def timed(ends: list[float]) -> list[float]:
    """Round times of rounds 2..R-1 from the round-end stamps of rounds 1..R."""
    return [ends[i] - ends[i - 1] for i in range(1, len(ends) - 1)]


def peak_rss_mb(pid: int | str = "self") -> float:
    """``VmHWM`` of a process in MB (0.0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def ray_workers(title: str) -> list[int]:
    """Pids of this machine's Ray worker processes titled ``ray::<title>...``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(f"ray::{title}"):
                pids.append(int(entry.name))
    return pids


def cpu_seconds() -> dict[int, float]:
    """User + system CPU seconds of every process on this machine, by pid (``/proc/<pid>/stat``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def gpu_memory_mb(pids: list[int]) -> dict[int, float]:
    """GPU memory per process from ``nvidia-smi`` ({} without it)."""
    if not shutil.which("nvidia-smi"):
        return {}
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    used = {int(p): float(m) for p, m in (line.split(",") for line in out.strip().splitlines() if "," in line)}
    return {pid: used[pid] for pid in pids if pid in used}


# ---------------------------------------------------------------------------------------------- sides
def side_fedtwin(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    from fedtwin.orchestrator.config.spec import ExperimentSpec
    from fedtwin.orchestrator.run.callbacks import RunCallback
    from fedtwin.orchestrator.run.checkpoint import latest_checkpoint
    from fedtwin.orchestrator.run.experiment import run_experiment
    from fedtwin.orchestrator.run.run_folder import RunFolder

    spec = ExperimentSpec.from_dict(spec_dict(workload, args, args.gpus))
    ends: list[float] = []
    hosts: dict[str, Any] = {}

    cpu: list[dict[int, float]] = []

    class Clock(RunCallback):
        def on_step_end(self, step: int, metrics: Any) -> None:
            ends.append(time.perf_counter())
            if step in (1, args.rounds - 1):  # the timed rounds' bounds: CPU used by every process
                cpu.append(cpu_seconds())
            if step == args.rounds - 1:  # before the evaluation round and shutdown
                pids = ray_workers("DeviceHost")
                hosts["host_pids"] = pids
                hosts["peak_rss_mb"] = max((peak_rss_mb(p) for p in pids), default=0.0)
                hosts["gpu_mb"] = sorted(gpu_memory_mb(pids).values())

    result = run_experiment(spec, callbacks=[Clock()])
    records = RunFolder(result.run_dir).read_metrics()
    idle = [r["host_idle_s"] for r in records[1:-1] if "host_idle_s" in r]
    turnaround = [r["host_idle_min_s"] for r in records[1:-1] if "host_idle_min_s" in r]
    final = latest_checkpoint(Path(result.run_dir) / "checkpoints")
    weights = str(Path(args.scratch) / f"{workload}-fedtwin.npz")
    import numpy as np

    np.savez(weights, **(final.model if final else {}))
    busy = [r.get("host_busy_s") for r in records[1:-1]]
    # CPU seconds the timed rounds cost outside the device hosts (driver, raylet, GCS, Ray's agents,
    # anything else running), as a share of the cores over the timed rounds' wall time.
    before, after = cpu
    host_pids = set(hosts.pop("host_pids", []))
    other = sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in host_pids)
    hosts["other_cpu_share"] = other / (args.cores * (ends[-2] - ends[0]))
    return {
        "round_s": timed(ends),
        "busy_s": busy if None not in busy else None,
        "host_idle_s": statistics.median(idle) if idle else None,
        "driver_turnaround_s": statistics.median(turnaround) if turnaround else None,
        "driver_peak_rss_mb": peak_rss_mb(),
        **hosts,
        "weights": weights,
        "final_test_accuracy": result.summary.get("final_test_accuracy"),
        "run_dir": str(result.run_dir),
    }


def side_limit(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from throughput_baselines import limit_rounds

    from fedtwin.orchestrator.config.spec import ExperimentSpec

    ends, state, busy = limit_rounds(ExperimentSpec.from_dict(spec_dict(workload, args)), args.cores)
    weights = str(Path(args.scratch) / f"{workload}-limit.npz")
    np.savez(weights, **state)
    return {"round_s": timed(ends), "busy_s": busy[1:-1], "weights": weights}


def side_pool(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    from throughput_baselines import pool_rounds

    from fedtwin.orchestrator.config.spec import ExperimentSpec

    return {"round_s": timed(pool_rounds(ExperimentSpec.from_dict(spec_dict(workload, args)), args.cores))}


SIDES = {"fedtwin": side_fedtwin, "limit": side_limit, "pool": side_pool}


# ---------------------------------------------------------------------------------------------- driver
def run_side(side: str, workload: str, args: argparse.Namespace, gpus: float = 0.0, repeat: int = 0) -> dict[str, Any]:
    """One side of one workload in a fresh process (its peak RSS is its own)."""
    out = Path(args.scratch) / f"{workload}-{side}-{gpus}-{repeat}.json"
    cmd = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--workloads",
        workload,
        "--result",
        str(out),
        "--rounds",
        str(args.rounds),
        "--cores",
        str(args.cores),
        "--data-root",
        args.data_root,
        "--run-root",
        args.run_root,
        "--scratch",
        args.scratch,
        "--gpus",
        str(gpus),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if args.quiet else None)
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - started
    if result.get("weights"):  # keep each repeat's final weights apart
        kept = result["weights"].replace(".npz", f"-{gpus}-{repeat}.npz")
        os.replace(result["weights"], kept)
        result["weights"] = kept
    return result


def same_weights(a: str, b: str) -> bool:
    import numpy as np

    with np.load(a) as x, np.load(b) as y:
        return set(x.files) == set(y.files) and all(np.array_equal(x[k], y[k]) for k in x.files)


def summarise(workload: str, sides: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One table row from each side's runs (repeats): medians over all timed rounds of all repeats.

    ``busy`` is the work inside the hosts' (the limit's workers') round calls, summed over them, per
    device: ``busy fedtwin / limit`` near ``limit / fedtwin`` says the gap is in the training itself
    (e.g. CPU taken by other processes), near 1 that it is between the calls (dispatch, waiting).
    """
    per_round = WORKLOADS[workload][2]
    row: dict[str, Any] = {"workload": workload, "devices_per_round": per_round}
    for name, runs in sides.items():
        rounds = [t for res in runs for t in res.get("round_s", [])]
        if rounds:
            median = statistics.median(rounds)
            row[f"{name}_round_s"] = round(median, 4)
            row[f"{name}_devices_per_s"] = round(per_round / median, 1)
        busy = [b for res in runs for b in (res.get("busy_s") or [])]
        if busy:
            row[f"{name}_busy_ms_per_device"] = round(1000 * statistics.median(busy) / per_round, 2)
    fed, lim = row.get("fedtwin_devices_per_s"), row.get("limit_devices_per_s")
    if fed and lim:
        row["limit_over_fedtwin"] = round(lim / fed, 3)
        # The same ratio within each repeat (fedtwin and the limit run back to back): its spread is the noise.
        row["limit_over_fedtwin_by_repeat"] = [
            round(statistics.median(f["round_s"]) / statistics.median(m["round_s"]), 3)
            for f, m in zip(sides["fedtwin"], sides["limit"])
        ]
        row["same_weights"] = all(
            same_weights(f["weights"], m["weights"]) for f, m in zip(sides["fedtwin"], sides["limit"])
        )
    if row.get("fedtwin_busy_ms_per_device") and row.get("limit_busy_ms_per_device"):
        row["busy_fedtwin_over_limit"] = round(row["fedtwin_busy_ms_per_device"] / row["limit_busy_ms_per_device"], 3)
    if fed and row.get("pool_devices_per_s"):
        row["fedtwin_over_pool"] = round(fed / row["pool_devices_per_s"], 2)
    fedtwin = sides.get("fedtwin", [])

    def median_of(key: str) -> float | None:
        values = [f[key] for f in fedtwin if f.get(key) is not None]
        return statistics.median(values) if values else None

    row.update({k: median_of(k) for k in ("host_idle_s", "driver_turnaround_s", "other_cpu_share")})
    row["driver_peak_rss_mb"] = max((f.get("driver_peak_rss_mb") or 0.0 for f in fedtwin), default=None)
    row["host_peak_rss_mb"] = max((f.get("peak_rss_mb") or 0.0 for f in fedtwin), default=None)
    row["gpu_mb"] = fedtwin[-1].get("gpu_mb") if fedtwin else None
    return row


def table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any, spec: str = "") -> str:
        return "-" if v is None else (format(v, spec) if spec else str(v))

    lines = [
        "| workload | devices/round | fedtwin devices/s | limit devices/s | limit / fedtwin | same, per repeat | "
        "busy ms/device, fedtwin / limit | per-client pool devices/s | fedtwin / pool | same weights | "
        "host idle between rounds, mean / last host (s) | other processes' CPU | driver peak RSS (MB) | "
        "host peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            " | ".join(
                [
                    f"| {r['workload']}" + (f" (gpus_per_host {r['gpus_per_host']})" if r.get("gpus_per_host") else ""),
                    str(r["devices_per_round"]),
                    fmt(r.get("fedtwin_devices_per_s")),
                    fmt(r.get("limit_devices_per_s")),
                    fmt(r.get("limit_over_fedtwin"), ".3f"),
                    ", ".join(f"{v:.3f}" for v in r.get("limit_over_fedtwin_by_repeat") or []) or "-",
                    f"{fmt(r.get('fedtwin_busy_ms_per_device'))} / {fmt(r.get('limit_busy_ms_per_device'))}",
                    fmt(r.get("pool_devices_per_s")),
                    fmt(r.get("fedtwin_over_pool")),
                    {True: "yes", False: "no"}.get(r.get("same_weights"), "-"),
                    f"{fmt(r.get('host_idle_s'), '.3f')} / {fmt(r.get('driver_turnaround_s'), '.3f')}",
                    fmt(r.get("other_cpu_share"), ".1%"),
                    fmt(r.get("driver_peak_rss_mb"), ".0f"),
                    fmt(r.get("host_peak_rss_mb"), ".0f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=7, help="rounds per side; rounds 2..R-1 are timed")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="hosts = limit workers = pool actors")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs per side, fedtwin and the limit alternating (medians pool all timed rounds)",
    )
    parser.add_argument("--pool", action="store_true", help="also time the per-client actor pool")
    parser.add_argument("--pool-workloads", nargs="+", default=["tiny3d-step"], choices=list(WORKLOADS))
    parser.add_argument(
        "--gpus-per-host",
        nargs="*",
        type=float,
        default=[],
        help="with CUDA: repeat fedtwin at these GPU fractions per host (e.g. 1 0.5 0.25)",
    )
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--run-root", default=None, help="run folders of the fedtwin side (default: a temp dir)")
    parser.add_argument("--output", default="docs/results/throughput", help="writes OUTPUT.md and OUTPUT.json")
    parser.add_argument("--quiet", action="store_true")
    # internal: one side in a child process
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--gpus", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 4:
        parser.error("--rounds must be >= 4 (round 1 and the last round are not timed)")
    if args.side:
        result = SIDES[args.side](args.workloads[0], args)
        Path(args.result).write_text(json.dumps(result))
        return
    tmp = tempfile.TemporaryDirectory(prefix="fedtwin-bench-")
    args.scratch = tmp.name
    args.run_root = args.run_root or str(Path(tmp.name) / "runs")
    load_before = os.getloadavg()
    started = time.time()
    from fedtwin.orchestrator.config.spec import ExperimentSpec
    from fedtwin.orchestrator.run.data_prep import ensure_partition

    for w in args.workloads:  # data first (shared by all workloads), so no side pays for it
        ensure_partition(ExperimentSpec.from_dict(spec_dict(w, args)).data)
    rows = []
    for w in args.workloads:
        sides: dict[str, list[dict[str, Any]]] = {"fedtwin": [], "limit": []}
        for repeat in range(args.repeats):  # alternate which side goes first, so drift hits both alike
            for side in ("fedtwin", "limit") if repeat % 2 == 0 else ("limit", "fedtwin"):
                sides[side].append(run_side(side, w, args, repeat=repeat))
        if args.pool and w in args.pool_workloads:
            sides["pool"] = [run_side("pool", w, args)]
        rows.append(summarise(w, sides))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        for gpus in args.gpus_per_host:
            row = summarise(w, {"fedtwin": [run_side("fedtwin", w, args, gpus)]})
            row["gpus_per_host"] = gpus
            rows.append(row)
    load_after = os.getloadavg()
    text = table(rows)
    print("\n" + text)
    write_results(args, rows, text, load_before, load_after, time.time() - started)


def write_results(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    text: str,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    seconds: float,
) -> None:
    import torch

    command = "python benchmarks/bench_throughput.py " + " ".join(sys.argv[1:])
    machine = {
        "cores": os.cpu_count(),
        "cores_used": args.cores,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
    }
    payload = {
        "command": command,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "devices": DEVICES,
        "clips_per_device": CLIPS_PER_DEVICE,
        "machine": machine,
        "seconds": round(seconds, 1),
        "rows": rows,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    gpu_note = (
        ""
        if torch.cuda.is_available()
        else "\nGPU figures: pending (this machine has no GPU); on one, add `--gpus-per-host 1 0.5 0.25`.\n"
    )
    out.with_suffix(".md").write_text(
        f"# Throughput: fedtwin vs the compute limit\n\nWritten by `{command}` "
        f"({seconds:.0f} s; {machine['cores']} cores, torch {machine['torch']}; load average "
        f"{machine['load_average_before'][0]} before, {machine['load_average_after'][0]} after).\n\n"
        f"{DEVICES} devices of {CLIPS_PER_DEVICE} moving-digit clips each (IID), SGD lr 0.05, batch 16, FedAvg, "
        f"{args.rounds} rounds per run, {args.repeats} runs per side (fedtwin and the limit alternating), medians over "
        f"rounds 2..{args.rounds - 1} of all runs. `step`: one local step per "
        "device; `epoch`: one local epoch (2 steps). Models: tiny3d default (0.04 MB), widths 32/64/128 "
        "(0.6 MB), 64/128/256 (2.5 MB). How each side runs: the docstring of `benchmarks/bench_throughput.py`.\n\n"
        f"{text}\n\n"
        "`limit / fedtwin`: how many times faster the limit is (1.00 = fedtwin at the limit); `same, per repeat`: "
        "that ratio within each back-to-back pair of runs (its spread is this machine's noise). `busy ms/device`: "
        "time inside the hosts' (the limit workers') round calls, summed over them, per device: when its ratio is "
        "close to `limit / fedtwin`, the gap is in the training calls themselves, not between them. `other processes' "
        "CPU`: CPU time of every process but the device hosts (the driver, Ray's raylet, GCS and agents, anything "
        "else on the machine) during fedtwin's timed rounds, as a share of the cores: it is taken from the hosts, "
        "which Ray runs at niceness 15. `same weights`: "
        "fedtwin's final weights equal the limit's bit for bit. `host idle`: fedtwin's median over the timed "
        "rounds of the mean gap between a host finishing a round and starting the next (it includes waiting for "
        "the other host: the limit's workers wait for each other the same way) / the gap of the host that "
        "finished last (the driver's own turnaround). Peak RSS: `VmHWM`; a host's includes the pages of its "
        "memory-mapped device store it touched (file-backed, shared with the page cache).\n"
        f"{gpu_note}"
    )


if __name__ == "__main__":
    main()
