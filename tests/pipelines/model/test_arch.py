"""The torch-free architecture lookup agrees with the networks, and pipelines/ has no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fedtwin.pipelines.model.arch import BUILTIN_ARCH_DEFAULTS, BUILTIN_ARCHS, arch_defaults, resolve_arch, takes_config
from fedtwin.pipelines.model.networks import MODELS, ModelConfig
from fedtwin.pipelines.plugins import PluginError

ROOT = Path(__file__).resolve().parents[3]


def test_builtin_tables_agree_with_the_networks():
    assert set(BUILTIN_ARCHS) == set(BUILTIN_ARCH_DEFAULTS) == set(MODELS)
    for name, spec in MODELS.items():
        assert resolve_arch(name) is spec
        assert BUILTIN_ARCH_DEFAULTS[name] == (spec.default_widths, spec.default_input_pool)


def test_shape_check_without_importing_torch_for_it():
    class NotAModule:
        def __init__(self, cfg):
            self.cfg = cfg

    assert not takes_config(NotAModule) and not takes_config(42) and not takes_config(lambda: None)
    assert takes_config(lambda cfg: cfg) and takes_config(MODELS["tiny3d"])
    with pytest.raises(PluginError, match=r"^arch: 'math:pi' resolved to"):
        arch_defaults("math:pi")


def test_model_config_loads_without_torch():
    code = (
        "import sys\n"
        "from fedtwin.pipelines.model.config import ModelConfig\n"
        "cfg = ModelConfig(arch='c3d')\n"
        "print(cfg.widths, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(32,", "64,", "128,", "256)", "False"]
    assert ModelConfig(arch="c3d").widths == MODELS["c3d"].default_widths


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["fedtwin", *parts])


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports anywhere (function-level too, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("fedtwin."):
                found.add(name)
    return found


def test_pipelines_import_no_cycle_and_nothing_above_them():
    # Prepare: the module graph of pipelines/ from the sources, function-level imports included
    files = sorted((ROOT / "pipelines").rglob("*.py"))
    known = {_module_name(f) for f in files} | {"fedtwin.actors", "fedtwin.orchestrator"}
    graph = {_module_name(f): _imports(f, known) - {_module_name(f)} for f in files}
    # Assert: nothing from actors/ or orchestrator/
    upward = {m: sorted(d for d in deps if not d.startswith("fedtwin.pipelines")) for m, deps in graph.items()}
    assert {m: d for m, d in upward.items() if d} == {}

    # Assert: no cycle (depth-first search for a back edge; a package's own __init__ is not an edge target here)
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
