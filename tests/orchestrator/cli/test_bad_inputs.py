"""A table of malformed inputs run through ``fedtwin run``: configs, overrides, datasets, partitions and
resume folders. Each one exits 2 with at most 3 lines on stderr, no traceback, and leaves no run folder
(a resume folder is left exactly as it was). All of them fail before Ray starts, except the last test,
whose run does not fit its embedded cluster (a real subprocess with its own Ray)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from fedtwin.orchestrator.cli.main import main
from fedtwin.orchestrator.run.data_prep import ensure_dataset, ensure_partition
from tests.orchestrator.recipes.federated.test_federated_ray import tiny_spec

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sources(tiny_data_root):
    """A real tiny partition (10 devices, no shared split) and the dataset it was cut from."""
    data = tiny_spec(tiny_data_root, "unused").data
    return ensure_partition(data), ensure_dataset(data)


class Case:
    """Where one case writes its inputs and what it runs."""

    def __init__(self, tmp: Path, partition: Path, dataset: Path) -> None:
        self.tmp, self.partition, self.dataset = tmp, partition, dataset
        self.runs = tmp / "runs"

    def config(self, data: dict | None = None, name: str = "exp.yaml", **sections) -> Path:
        """A valid small federated config, changed by ``sections`` (top-level keys)."""
        base = tiny_spec(self.tmp / "data", self.runs).to_dict()
        base.update(sections)
        if data is not None:
            base["data"] = {**base["data"], **data}
        path = self.tmp / name
        path.write_text(yaml.safe_dump(base))
        return path

    def drill(self, **plan) -> Path:
        """A drill plan file (``fedtwin drill PLAN CONFIG``)."""
        path = self.tmp / "drill.yaml"
        path.write_text(yaml.safe_dump(plan))
        return path

    def raw(self, content: bytes | str, name: str = "raw.yaml") -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def copy_partition(self, name: str = "part") -> Path:
        return Path(shutil.copytree(self.partition, self.tmp / name))

    def shard(self, part: Path) -> Path:
        return part / json.loads((part / "manifest.json").read_text())["devices"][0]["path"]

    def run_folder(self, spec_text: str | None = None) -> Path:
        folder = self.tmp / "old-run"
        folder.mkdir()
        if spec_text is not None:
            (folder / "spec.yaml").write_text(spec_text)
        return folder


def _corrupt_shard(c: Case) -> list[str]:
    part = c.copy_partition()
    c.shard(part).write_bytes(b"PAR1 this is not a parquet file")
    return ["run", str(c.config(data={"path": str(part)}))]


def _truncated_shard(c: Case) -> list[str]:
    part = c.copy_partition()
    shard = c.shard(part)
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, 3), shard)
    return ["run", str(c.config(data={"path": str(part)}))]


def _missing_shard(c: Case) -> list[str]:
    part = c.copy_partition()
    c.shard(part).unlink()
    return ["run", str(c.config(data={"path": str(part)}))]


def _manifest(c: Case, text: str) -> list[str]:
    part = c.copy_partition()
    (part / "manifest.json").write_text(text)
    return ["run", str(c.config(data={"path": str(part)}))]


def _manifest_without(c: Case, key: str) -> list[str]:
    part = c.copy_partition()
    obj = json.loads((part / "manifest.json").read_text())
    del obj[key]
    (part / "manifest.json").write_text(json.dumps(obj))
    return ["run", str(c.config(data={"path": str(part)}))]


def _resume_spec(c: Case, text: str) -> list[str]:
    return ["run", "--resume", str(c.run_folder(text))]


def _resume_of(c: Case, **data) -> list[str]:
    spec = yaml.safe_load(c.config(data=data).read_text())
    return ["run", "--resume", str(c.run_folder(yaml.safe_dump(spec)))]


FEDDU = {"name": "feddu", "params": {}}
KILL = {"round": 1, "host": 0, "phase": "fit"}

#: (id, arguments builder, a piece of the expected one-line error)
CASES: list[tuple[str, Callable[[Case], list[str]], str]] = [
    # ---- config files
    ("binary-config", lambda c: ["run", str(c.raw(b"\x00\x01\x02\xff binary"))], "not a text file"),
    ("latin1-config", lambda c: ["run", str(c.raw(b"name: caf\xe9\n"))], "not a text file"),
    ("empty-config", lambda c: ["run", str(c.raw(b""))], "is empty"),
    ("comment-only-config", lambda c: ["run", str(c.raw("# nothing\n"))], "is empty"),
    ("list-config", lambda c: ["run", str(c.raw("- 1\n- 2\n"))], "mapping"),
    ("invalid-yaml", lambda c: ["run", str(c.raw("name: [x\n"))], "not valid YAML"),
    ("missing-config", lambda c: ["run", str(c.tmp / "nowhere.yaml")], "nowhere.yaml"),
    ("config-is-a-directory", lambda c: ["run", str(c.tmp)], ""),  # message checked loosely
    ("unknown-top-level-key", lambda c: ["run", str(c.config(nmae="x"))], "nmae: unknown key"),
    (
        "unknown-nested-key",
        lambda c: ["run", str(c.config(federation={"devices_per_rounds": 3}))],
        "did you mean 'devices_per_round'",
    ),
    ("wrong-type", lambda c: ["run", str(c.config(federation={"num_rounds": "ten"}))], "federation.num_rounds"),
    ("out-of-range", lambda c: ["run", str(c.config(federation={"num_rounds": 0}))], "must be >= 1"),
    ("unknown-recipe", lambda c: ["run", str(c.config(recipe="nope"))], "recipe"),
    ("unknown-strategy", lambda c: ["run", str(c.config(strategy={"name": "fedmagic"}))], "strategy"),
    (
        "bad-strategy-param",
        lambda c: ["run", str(c.config(strategy={"name": "feddu", "params": {"decay": 2}}))],
        "strategy.params.decay",
    ),
    ("other-recipes-section", lambda c: ["run", str(c.config(twin={"epochs": 2}))], "twin"),
    ("missing-base", lambda c: ["run", str(c.config(base="missing-base.yaml"))], "missing-base.yaml"),
    # ---- overrides
    ("set-without-equals", lambda c: ["run", str(c.config()), "--set", "seed"], "seed"),
    ("set-unknown-key", lambda c: ["run", str(c.config()), "--set", "federation.nope=1"], "federation.nope"),
    ("set-wrong-type", lambda c: ["run", str(c.config()), "--set", "training.lr=abc"], "training.lr"),
    ("set-into-a-scalar", lambda c: ["run", str(c.config()), "--set", "seed.x=1"], "seed"),
    ("config-after-set", lambda c: ["run", "--set", "seed=1", str(c.config())], "put CONFIG before --set"),
    (
        "drill-kill-after-last-round",
        lambda c: ["drill", str(c.drill(kills=[{"round": 99}])), str(c.config())],
        "after the last round",
    ),
    (
        "drill-plan-unknown-key",
        lambda c: ["drill", str(c.drill(kils=[KILL])), str(c.config())],
        "kils: unknown key",
    ),
    (
        "fault-drill-in-the-spec",
        lambda c: ["run", str(c.config(federation={"chaos": {"kills": [KILL]}}))],
        "fedtwin drill PLAN CONFIG",
    ),
    # ---- datasets (data.path)
    ("path-does-not-exist", lambda c: ["run", str(c.config(data={"path": str(c.tmp / "gone")}))], "does not exist"),
    (
        "path-is-a-file",
        lambda c: ["run", str(c.config(data={"path": str(c.raw("x", "plain.txt"))}))],
        "is a file, not a directory",
    ),
    ("path-without-manifest", lambda c: ["run", str(c.config(data={"path": str(c.tmp)}))], "no manifest.json"),
    ("broken-manifest", lambda c: _manifest(c, "{not json"), "unreadable JSON"),
    ("manifest-of-unknown-kind", lambda c: _manifest(c, json.dumps({"kind": "other"})), "manifest"),
    ("manifest-missing-devices", lambda c: _manifest_without(c, "devices"), "devices"),
    ("missing-shard-file", _missing_shard, "file not found"),
    ("corrupt-shard-file", _corrupt_shard, "not a readable Parquet file"),
    ("truncated-shard-file", _truncated_shard, "rows"),
    (
        "dataset-instead-of-partition",
        lambda c: ["run", str(c.config(data={"path": str(c.dataset)}))],
        "is a dataset, not a partition",
    ),
    (
        "path-and-dataset-plugin",
        lambda c: ["run", str(c.config(data={"path": str(c.partition), "dataset": "moving-digits"}))],
        "both name the data",
    ),
    ("unknown-dataset-plugin", lambda c: ["run", str(c.config(data={"dataset": "no_such_pkg:make"}))], "data.dataset"),
    # ---- partitions and sizes
    (
        "more-devices-per-round-than-devices",
        lambda c: ["run", str(c.config(data={"path": str(c.partition)})), "--set", "federation.devices_per_round=11"],
        "11 is more than the 10 devices",
    ),
    (
        "more-devices-per-round-than-generated",
        lambda c: ["run", str(c.config()), "--set", "federation.devices_per_round=11"],
        "federation.devices_per_round",
    ),
    (
        "unknown-partition-scheme",
        lambda c: ["run", str(c.config()), "--set", "data.partition.scheme=zigzag"],
        "data.partition.scheme",
    ),
    ("negative-alpha", lambda c: ["run", str(c.config()), "--set", "data.partition.alpha=-1"], "alpha"),
    ("feddu-without-shared-split", lambda c: ["run", str(c.config(strategy=FEDDU))], "needs shared server data"),
    (
        "feddu-on-partition-without-shared",
        lambda c: ["run", str(c.config(data={"path": str(c.partition)}, strategy=FEDDU))],
        "needs shared server data",
    ),
    (
        "kill-of-a-missing-host",
        lambda c: ["drill", str(c.drill(kills=[{**KILL, "host": 5}])), str(c.config())],
        "host 5 does not exist",
    ),
    (
        "kill-at-a-non-checkpoint-round",
        lambda c: [
            "drill",
            str(c.drill(kills=[{**KILL, "round": 1, "phase": "checkpoint"}])),
            str(c.config()),
            "--set",
            "run.checkpoint_every=2",
        ],
        "no checkpoint round",
    ),
    (
        "kill-on-the-local-backend",
        lambda c: ["drill", str(c.drill(kills=[KILL])), str(c.config()), "--set", "resources.backend=local"],
        "resources.backend: ray",
    ),
    (
        "output-dir-is-a-file",
        lambda c: ["run", str(c.config()), "--output", str(c.raw("x", "out.txt"))],
        "is a file, not a directory",
    ),
    # ---- resume folders
    ("resume-missing-folder", lambda c: ["run", "--resume", str(c.tmp / "no-run")], "no spec.yaml"),
    ("resume-folder-without-spec", lambda c: ["run", "--resume", str(c.run_folder())], "no spec.yaml"),
    ("resume-a-file", lambda c: ["run", "--resume", str(c.raw("x", "run.txt"))], "no spec.yaml"),
    ("resume-binary-spec", lambda c: _resume_spec(c, "\x00\x01 not yaml"), "spec.yaml"),
    ("resume-spec-of-unknown-recipe", lambda c: _resume_spec(c, "name: x\nrecipe: nope\n"), "recipe"),
    ("resume-whose-data-is-gone", lambda c: _resume_of(c, path=str(c.tmp / "gone")), "does not exist"),
    ("no-config-no-resume", lambda c: ["run"], "give a CONFIG"),
]


@pytest.fixture
def no_ray(monkeypatch):
    """Every case must fail before Ray: starting it is a test failure, not a slow pass."""

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for an input that should have been rejected before")

    monkeypatch.setattr("fedtwin.orchestrator.run.ray_session.connect", refuse)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("build", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_in_at_most_3_lines_and_writes_nothing(tmp_path, sources, capsys, no_ray, build, message):
    # Prepare
    case = Case(tmp_path, *sources)
    argv = build(case)
    resumed = Path(argv[argv.index("--resume") + 1]) if "--resume" in argv else None
    before = _snapshot(resumed) if resumed is not None and resumed.is_dir() else None
    capsys.readouterr()
    # Execute
    code = main(argv)
    # Assert
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert code == 2, err
    assert 1 <= len(lines) <= 3 and "Traceback" not in err, err
    assert lines[-1].startswith(("fedtwin: error:", "fedtwin run: error:")), err
    assert message in err, err
    assert not case.runs.exists() or not any(case.runs.iterdir()), "a run folder was left behind"
    if before is not None:
        assert _snapshot(resumed) == before, "the resume folder was changed"


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_a_run_too_big_for_its_embedded_cluster_exits_2_before_its_run_folder(tmp_path, sources):
    # Prepare: 4 hosts of 1 CPU on an embedded Ray with 2 CPUs
    case = Case(tmp_path, *sources)
    cfg = case.config(
        data={"path": str(case.partition)}, ray={"num_cpus": 2}, resources={"hosts": 4, "cpus_per_host": 1.0}
    )
    # Execute
    proc = subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", "run", str(cfg), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Assert
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("fedtwin: error: resources:") and "{CPU: 4}" in lines[-1]
    assert not case.runs.exists() or not any(case.runs.iterdir())
