"""``fedtwin run`` options that need no Ray: --print-config, --version, several --set, bad config files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.cli.main import main, version

ROOT = Path(__file__).resolve().parents[3]


def fedtwin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def user_recipe(tmp_path: Path) -> Path:
    """A config whose recipe is a user plugin next to it, so these tests need no built-in recipe."""
    module = f"cli_recipe_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{module}.py").write_text(
        "from dataclasses import dataclass\n\n"
        "@dataclass(frozen=True)\nclass Loop:\n    steps: int = 3\n    lr: float = 0.1\n\n"
        "class R:\n    sections = {'loop': Loop}\n\n    @classmethod\n    def validate(cls, spec):\n        pass\n"
    )
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "exp",
                "recipe": f"{module}:R",
                "plugins": {"paths": ["plugins"]},
                "loop": {"steps": 5},
                "run": {"output_dir": str(tmp_path / "runs")},
            }
        )
    )
    return cfg


def test_print_config_prints_the_resolved_spec_and_starts_nothing(tmp_path, capsys):
    # Prepare
    cfg = user_recipe(tmp_path)
    # Execute
    code = main(["run", str(cfg), "--print-config", "--set", "loop.lr=0.5", "seed=3", "--set", "name=other"])
    # Assert
    out = yaml.safe_load(capsys.readouterr().out)
    assert code == 0
    assert out["loop"] == {"steps": 5, "lr": 0.5} and out["seed"] == 3 and out["name"] == "other"
    assert out["plugins"]["paths"] == [str((tmp_path / "plugins").resolve())]
    assert not (tmp_path / "runs").exists()  # no run folder


def test_print_config_of_quickstart_subprocess():
    # Execute
    proc = fedtwin(
        "run", "configs/quickstart.yaml", "--print-config", "--set", "federation.num_rounds=4", "training.lr=0.01"
    )
    # Assert
    assert proc.returncode == 0, proc.stderr
    out = yaml.safe_load(proc.stdout)
    assert out["name"] == "quickstart" and out["strategy"]["name"] == "feddu"
    assert out["federation"]["num_rounds"] == 4 and out["training"]["lr"] == 0.01
    assert not {"twin", "incremental", "transfer"} & set(out)


def test_version():
    # Execute
    proc = fedtwin("--version")
    # Assert
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"fedtwin {version()}" and version() != "unknown"


def test_config_written_after_set_gets_a_hint(tmp_path, capsys):
    # Prepare
    cfg = user_recipe(tmp_path)
    # Execute
    code = main(["run", "--set", "seed=1", str(cfg)])
    # Assert
    err = capsys.readouterr().err.strip()
    assert code == 2 and "put CONFIG before --set" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01\x02\xff\xfe binary", "not a text file"),
        (b"", "is empty"),
        (b"\n# nothing but a comment\n", "is empty"),
    ],
)
def test_binary_and_empty_config_files_exit_2_with_one_line(tmp_path, capsys, content, message):
    # Prepare
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(content)
    # Execute: in this process (config/test_config.py checks the exit status of a real `fedtwin run` process)
    code = main(["run", str(cfg)])
    # Assert
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and str(cfg) in lines[0] and captured.out == ""


@pytest.mark.parametrize(("content", "message"), [("- 1\n- 2\n", "top level must be a mapping"), ("", "is empty")])
def test_resume_of_a_bad_spec_yaml_exits_2_with_one_line(tmp_path, capsys, content, message):
    # Prepare
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text(content)
    # Execute
    code = main(["run", "--resume", str(run_dir), "--print-config"])
    # Assert
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "spec.yaml" in err
