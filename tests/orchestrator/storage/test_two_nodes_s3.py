"""A federated run, its resume and a Tune sweep on a two-node Ray cluster whose only shared storage is S3.

Everything a cloud cluster has, on this machine: a local S3 API (moto), a private head node and a worker
node (each its own ``ray start``, temp dir, ports and per-node cache folder), the partition uploaded to
the bucket by ``fedtwin data``, device hosts placed on the worker by a custom resource (``edge``), and
run folders, checkpoints and the sweep in the bucket. No partition exists on local disk at all, and the
hosts report which files they opened. Processes are stopped by process group / pid, never ``ray stop``.

Selected with ``-m s3`` (about 2 minutes on 2 cores); README's test command runs it after the default suite.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.cli.main import main
from fedtwin.orchestrator.cluster.local_cluster import start_local_cluster, start_local_worker, stop_local_cluster
from fedtwin.pipelines.core import storage
from tests.orchestrator.storage.conftest import BUCKET, client_env

pytestmark = pytest.mark.s3

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PARTS = f"s3://{BUCKET}/data/parts"


def _fedtwin(
    args: list[str], env: dict[str, str], cwd: Path, hosts_json: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """``fedtwin ARGS`` in a fresh process (through the host-recording wrapper when ``hosts_json`` is given)."""
    if hosts_json is not None:
        cmd = [sys.executable, str(HERE / "probe_run.py"), str(hosts_json), "--", *args]
    else:
        cmd = [sys.executable, "-m", "fedtwin.orchestrator.cli.main", *args]
    env = {**env, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def _experiment(path: Path) -> Path:
    cfg = {
        "name": "s3-two-nodes",
        "seed": 3,
        "data": {"path": PARTS},
        "training": {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 0.003},
        "federation": {"num_rounds": 3, "devices_per_round": 10, "round_timeout_s": 120},
        "strategy": {"name": "fedavg"},
        # two hosts, each needs one "edge": only the worker node has them
        "resources": {"hosts": 2, "cpus_per_host": 0.5, "host_resources": {"edge": 1}},
        "run": {"output_dir": "runs", "checkpoint_every": 1},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _assert_hosts_on_worker_reading_s3(hosts: list[dict], worker_cache: Path, *, reused: bool) -> None:
    assert len(hosts) == 2
    for info in hosts:
        store = info["store"]
        assert store is not None, info
        assert Path(store["path"]).is_relative_to(worker_cache), store  # the host ran on the worker node
        if reused:  # a second run on the node: the cache entry is reused, the partition not read again
            assert info["cache_hits"] == 1 and info["source_reads"] == [], info
        else:
            assert info["source_reads"], info
        assert all(str(r).startswith(f"{PARTS}/devices/") for r in info["source_reads"]), info


def test_run_resume_and_sweep_on_two_nodes_with_s3_storage(s3, tmp_path):
    # Prepare: the data, made and partitioned straight into the bucket (no local copy anywhere)
    s3_env = s3  # the S3 settings, applied to this process too (for the bucket checks below)
    clock = _Phases()
    env = client_env(s3_env)
    work = tmp_path / "work"
    work.mkdir()
    assert (
        main(
            [
                "data",
                "make",
                "moving-digits",
                f"s3://{BUCKET}/data/digits",
                "--train-per-class",
                "40",
                "--test-per-class",
                "10",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "partition",
                f"s3://{BUCKET}/data/digits",
                PARTS,
                "--devices",
                "10",
                "--scheme",
                "dirichlet",
                "--shared-fraction",
                "0.1",
                "--seed",
                "0",
                "--no-plot",
            ]
        )
        == 0
    )
    assert storage.is_file(f"{PARTS}/manifest.json")
    clock("data into the bucket")
    # a head node (1 CPU, no edge) and a worker node (2 CPUs, 2 edge), each with its own cache folder
    caches = {name: tmp_path / f"cache-{name}" for name in ("head", "worker", "driver")}
    head, head_proc = start_local_cluster(
        num_cpus=1, object_store_mb=150, timeout_s=120, env={**s3_env, "FEDTWIN_CACHE_DIR": str(caches["head"])}
    )
    worker = worker_proc = None
    try:
        worker, worker_proc = start_local_worker(
            head,
            num_cpus=2,
            object_store_mb=150,
            resources={"edge": 2},
            env={**s3_env, "FEDTWIN_CACHE_DIR": str(caches["worker"])},
        )
        env = client_env(s3_env, **head.env(), FEDTWIN_CACHE_DIR=str(caches["driver"]))
        clock("head and worker nodes")
        cfg = _experiment(work / "exp.yaml")

        # Execute 1: a federated run whose run folder lives in the bucket
        out = _ok(
            _fedtwin(
                ["run", str(cfg), "--output", f"s3://{BUCKET}/runs", "--quiet"],
                env,
                work,
                hosts_json=tmp_path / "hosts-1.json",
            )
        )
        # Assert 1
        run_uri = re.search(r"done: (s3://\S+) \| final test accuracy ([0-9.]+)", out)
        assert run_uri, out
        run, accuracy = run_uri.group(1), float(run_uri.group(2))
        assert run.startswith(f"s3://{BUCKET}/runs/s3-two-nodes-")
        files = storage.list_files(run)
        assert {
            "spec.yaml",
            "metrics.jsonl",
            "summary.json",
            "plots/accuracy.png",
            "plots/confusion.png",
            "checkpoints/step-00002/meta.json",
            "checkpoints/step-00003/meta.json",
            "checkpoints/step-00003/model.safetensors",
        } <= set(files), files
        assert not any(f.startswith("checkpoints/step-00001/") for f in files)  # pruned (keep 2)
        rounds = [json.loads(line)["round"] for line in storage.read_text(f"{run}/metrics.jsonl").splitlines()]
        assert rounds == [1, 2, 3]
        assert json.loads(storage.read_text(f"{run}/summary.json"))["run_dir"] == run
        _assert_hosts_on_worker_reading_s3(
            json.loads((tmp_path / "hosts-1.json").read_text()), caches["worker"], reused=False
        )
        for name in ("head", "driver"):  # nothing hosted devices there
            assert not list(caches[name].glob("devices/*.arrow")), name
        assert not (work / "runs").exists() and not (work / "data").exists()
        clock("run")

        # Execute 2: as if the driver died after round 2, resume from the bucket
        storage.delete_dir(f"{run}/checkpoints/step-00003")
        storage.delete_file(f"{run}/summary.json")
        lines = storage.read_text(f"{run}/metrics.jsonl").splitlines()
        storage.write_text_atomic(f"{run}/metrics.jsonl", "\n".join(lines[:2]) + "\n")
        proc = _fedtwin(["run", "--resume", run], env, work, hosts_json=tmp_path / "hosts-2.json")
        # Assert 2: the same final model as the uninterrupted run, the node's device cache reused
        out = _ok(proc)
        assert "resuming after round 2" in proc.stderr
        assert f"done: {run} | final test accuracy {accuracy:.4f}" in out
        assert "checkpoints/step-00003/meta.json" in storage.list_files(run)
        assert [json.loads(x)["round"] for x in storage.read_text(f"{run}/metrics.jsonl").splitlines()] == [1, 2, 3]
        _assert_hosts_on_worker_reading_s3(
            json.loads((tmp_path / "hosts-2.json").read_text()), caches["worker"], reused=True
        )
        clock("resume")

        # Execute 3: a 2-trial Tune sweep with its storage in the bucket
        base = yaml.safe_load(cfg.read_text())
        base["resources"]["hosts"] = 1  # two trials side by side on the worker's two "edge"
        (work / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        sweep = {
            "base": "base.yaml",
            "name": "s3-sweep",
            "output_dir": f"s3://{BUCKET}/sweeps",
            "overrides": {"federation.num_rounds": 2},
            "search_space": {"training.lr": {"grid": [0.003, 0.01]}},
            "search": {"algorithm": "grid", "seed": 0},
            "scheduler": {"name": "fifo"},
            "resources": {"driver_cpus": 0.5},
        }
        (work / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
        out = _ok(_fedtwin(["tune", "sweep.yaml", "--quiet"], env, work, timeout=300))
        # Assert 3: the summary and every trial's Tune checkpoints are in the bucket
        root = f"s3://{BUCKET}/sweeps/s3-sweep"
        assert f"sweep: {root} | 2 trials" in out, out
        files = storage.list_files(root)
        assert {"sweep.yaml", "base.yaml", "sweep.csv", "sweep.md", "best.yaml"} <= set(files), files
        trials = {f.split("/")[0] for f in files if f.startswith("trial_")}
        assert len(trials) == 2, files
        for trial in trials:
            ckpts = [f for f in files if f.startswith(f"{trial}/checkpoint_") and f.endswith("step-00002/meta.json")]
            assert ckpts, trial
        rows = list(csv_rows(storage.read_text(f"{root}/sweep.csv")))
        assert [r["status"] for r in rows] == ["completed", "completed"], rows
        clock("sweep")
    finally:
        if worker is not None:
            stop_local_cluster(worker, proc=worker_proc, remove=True)
        stop_local_cluster(head, proc=head_proc, remove=True)


def csv_rows(text: str):
    import csv
    import io

    yield from csv.DictReader(io.StringIO(text))


class _Phases:
    """Prints how long each phase took (shown with -s, or on failure)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        print(f"{name}: {now - self.last:.1f}s", flush=True)
        self.last = now
