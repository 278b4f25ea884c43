"""The installed wheel: one `fedtwin` namespace, no bare `orchestrator`/`actors`/`pipelines` modules.

Builds the wheel of this checkout, installs it (without dependencies) into a fresh venv that borrows the
test environment's third-party packages through a path entry, puts an unrelated package named
``pipelines`` beside it, and runs a one-round experiment on an embedded Ray from a folder outside the
checkout. The Ray workers import fedtwin from the wheel, the user's ``pipelines`` stays the user's.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH"}}
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(ROOT)],
        tmp,
        env,
        600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("fedtwin-*.whl")

    target = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    purelib = Path(
        subprocess.check_output(
            [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    # Third-party packages (torch, ray, ...) come from the test environment's site-packages. A path
    # listed in a .pth file is added to sys.path without running that folder's own .pth files, so the
    # checkout's editable fedtwin finder stays inactive in the new venv.
    deps = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (purelib / "zz_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "--no-deps", "-q"]
        + [str(wheel)],
        tmp,
        env,
        600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    dummy = purelib / "pipelines"
    dummy.mkdir()
    (dummy / "__init__.py").write_text('OWNER = "somebody else"\n')
    return target


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env["RAY_TMPDIR"] = os.environ.get("RAY_TMPDIR", "/tmp")
    return env


def test_wheel_installs_one_namespace(wheel_venv: Path, tmp_path: Path) -> None:
    probe = (
        "import fedtwin, pipelines, importlib.util as u\n"
        "from fedtwin import ExperimentSpec, run_experiment\n"
        "print(fedtwin.__file__)\n"
        "print(pipelines.OWNER)\n"
        "print(u.find_spec('orchestrator'), u.find_spec('actors'))\n"
    )
    out = _run([str(wheel_venv / "bin" / "python"), "-c", probe], tmp_path, _clean_env(), 120)
    assert out.returncode == 0, out.stderr[-2000:]
    fedtwin_file, owner, specs = out.stdout.strip().splitlines()
    assert Path(fedtwin_file).is_relative_to(wheel_venv), fedtwin_file  # the wheel's copy, not the checkout
    assert owner == "somebody else"
    assert specs == "None None"


def test_wheel_runs_one_round_beside_a_foreign_pipelines(wheel_venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "one_round.yaml"
    config.write_text(
        "name: wheel\nrecipe: federated\nseed: 0\n"
        "data: {root: data, generator: {train_per_class: 20, test_per_class: 5, frames: 4, size: 16,"
        " digit_size: 8}, partition: {devices: 4, scheme: iid, seed: 0}}\n"
        "model: {arch: tiny3d, frames: 4}\n"
        "training: {epochs: 1, batch_size: 8}\n"
        "federation: {num_rounds: 1, devices_per_round: 2, round_timeout_s: 120}\n"
        "resources: {hosts: 1}\n"
        "ray: {num_cpus: 1}\n"
        "run: {output_dir: runs}\n"
    )
    out = _run([str(wheel_venv / "bin" / "fedtwin"), "run", str(config), "--quiet"], tmp_path, _clean_env(), 300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    summaries = list((tmp_path / "runs").glob("wheel-*/summary.json"))
    assert len(summaries) == 1
    assert "final_test_accuracy" in summaries[0].read_text()
