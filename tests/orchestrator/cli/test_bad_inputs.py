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


def _with_text(c: Case, edit: Callable[[str], str], name: str = "exp.yaml") -> list[str]:
    """A valid config whose YAML text is changed by ``edit`` (for what a dict cannot hold: repeated keys)."""
    path = c.config(name=name)
    path.write_text(edit(path.read_text()))
    return ["run", str(path)]


def _base_chain(c: Case, depth: int) -> list[str]:
    """A config at the end of ``depth`` files that each name the next as their ``base:``."""
    c.config(name="b0.yaml")
    for i in range(1, depth + 1):
        (c.tmp / f"b{i}.yaml").write_text(f"base: b{i - 1}.yaml\n")
    return ["run", str(c.tmp / f"b{depth}.yaml")]


def _base_with(c: Case, text: str) -> list[str]:
    (c.tmp / "base.yaml").write_text(text)
    return ["run", str(c.raw(f"base: base.yaml\nname: x\ndata: {{root: {c.tmp / 'data'}}}\n"))]


def _named(c: Case, name: str) -> list[str]:
    """A valid config whose run ``name`` is ``name``."""
    path = c.config()
    spec = yaml.safe_load(path.read_text())
    spec["name"] = name
    path.write_text(yaml.safe_dump(spec))
    return ["run", str(path)]


LONG = "x" * 300
_ALIAS_BOMB = "a0: &a0 {k: 1}\n" + "".join(
    f"a{i}: &a{i} {{" + ", ".join(f"x{j}: *a{i - 1}" for j in range(10)) + "}\n" for i in range(1, 10)
)


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
    # ---- YAML details: repeated keys, shapes, depth
    (
        "duplicate-top-level-section",
        lambda c: _with_text(c, lambda t: t + "training:\n  lr: 0.1\n"),
        "key 'training' appears twice (line",
    ),
    ("duplicate-recipe-key", lambda c: _with_text(c, lambda t: t + "recipe: mutual\n"), "key 'recipe' appears twice"),
    (
        "duplicate-nested-key",
        lambda c: _with_text(c, lambda t: t.replace("federation:\n", "federation:\n  num_rounds: 9\n", 1)),
        "key 'federation.num_rounds' appears twice",
    ),
    ("duplicate-key-in-a-base", lambda c: _base_with(c, "seed: 1\nseed: 2\n"), "base.yaml: key 'seed' appears twice"),
    ("duplicate-key-in-a-set", lambda c: ["run", str(c.config()), "--set", "training={lr: 1, lr: 2}"], "'lr' appears"),
    ("duplicate-key-in-resume-spec", lambda c: _resume_spec(c, "name: x\nseed: 1\nseed: 2\n"), "'seed' appears twice"),
    ("scalar-config", lambda c: ["run", str(c.raw("42\n"))], "top level must be a mapping"),
    ("base-is-a-list", lambda c: _base_with(c, "- a\n- b\n"), "base.yaml: top level must be a mapping"),
    ("base-cycle", lambda c: ["run", str(c.config(base="exp.yaml"))], "cycle"),
    ("base-chain-too-deep", lambda c: _base_chain(c, 40), "more than 32 files deep"),
    ("deeply-nested-yaml", lambda c: ["run", str(c.raw("a: " + "[" * 5000 + "]" * 5000 + "\n"))], "nested too deeply"),
    ("yaml-alias-bomb", lambda c: ["run", str(c.raw(_ALIAS_BOMB))], "more than 1,000,000 values"),
    ("utf16-config", lambda c: ["run", str(c.raw("name: x\n".encode("utf-16")))], "not a text file"),
    # ---- names and paths the file system must take
    ("name-of-300-characters", lambda c: _named(c, LONG), "name: is 300 bytes long; at most 234"),
    ("name-of-300-utf8-bytes", lambda c: _named(c, "\u00e9" * 150), "name: is 300 bytes long"),
    ("name-too-long-by-set", lambda c: ["run", str(c.config()), "--set", f"name={LONG}"], "name: is 300 bytes"),
    ("name-dot-dot", lambda c: _named(c, ".."), "'..' is not a folder name"),
    ("name-empty", lambda c: _named(c, ""), "name: must not be empty"),
    ("name-with-nul", lambda c: ["run", str(c.raw('name: "a\\0b"\n'))], "name: must not contain '\\x00'"),
    ("name-with-newline", lambda c: _named(c, "a\nb"), "name: must not contain '\\n'"),
    ("name-with-backslash", lambda c: _named(c, "a\\b"), "name: must not contain"),
    ("name-starting-with-dash", lambda c: _named(c, "-rf"), "name: must not start with '-'"),
    ("output-dir-empty", lambda c: ["run", str(c.config()), "--output", ""], "run.output_dir: must name a folder"),
    ("output-dir-part-too-long", lambda c: ["run", str(c.config()), "--output", str(c.tmp / LONG)], "300 bytes"),
    ("data-root-empty", lambda c: ["run", str(c.config(data={"root": " "}))], "data.root: must name a folder"),
    ("data-root-is-a-file", lambda c: ["run", str(c.config(data={"root": str(c.raw("x", "f.txt"))}))], "data.root"),
    ("config-name-too-long", lambda c: ["run", str(c.tmp / f"{LONG}.yaml")], "cannot read the config file"),
    ("resume-path-too-long", lambda c: ["run", "--resume", str(c.tmp / LONG)], "--resume"),
    # ---- numbers at the edge of their type
    ("nan-float", lambda c: ["run", str(c.config()), "--set", "training.lr=.nan"], "training.lr: expected a finite"),
    ("inf-float", lambda c: ["run", str(c.config()), "--set", "federation.round_timeout_s=.inf"], "finite number"),
    ("huge-int", lambda c: ["run", str(c.config()), "--set", f"federation.num_rounds={10**20}"], "out of range"),
    ("huge-seed", lambda c: ["run", str(c.config()), "--set", f"seed={2**64}"], "seed: 18446744073709551616 is out"),
    ("huge-float", lambda c: ["run", str(c.config()), "--set", f"training.lr={10**400}"], "finite number"),
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
    long_name = resumed is not None and len(resumed.name.encode()) > 255  # is_dir() itself would raise
    before = _snapshot(resumed) if resumed is not None and not long_name and resumed.is_dir() else None
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
