"""Config files: base inheritance, plugin folders relative to the file, and one-line errors for bad files."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.config import BUILTIN_RECIPES, ConfigError, ExperimentSpec
from fedtwin.orchestrator.config.files import deep_merge, load_with_bases, read_mapping
from fedtwin.orchestrator.config.recipes import BUILTIN_SECTIONS

ROOT = Path(__file__).resolve().parents[3]
FAKES = "tests.orchestrator.config.fake_recipes"


@pytest.fixture
def fake_federated(monkeypatch):
    monkeypatch.setitem(BUILTIN_RECIPES, "federated", f"{FAKES}:FakeFederated")
    monkeypatch.setitem(BUILTIN_RECIPES, "mutual", f"{FAKES}:FakeMutual")
    for name in ("federated", "mutual"):  # the fakes stand in for the torch-free declarations too
        monkeypatch.delitem(BUILTIN_SECTIONS, name)


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    # Prepare
    base = {"a": {"x": 1, "y": {"p": 1}}, "l": [1, 2], "s": "base", "n": 1}
    # Execute
    out = deep_merge(base, {"a": {"y": {"q": 2}}, "l": [3], "n": None})
    # Assert
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [3], "s": "base", "n": None}
    assert base == {"a": {"x": 1, "y": {"p": 1}}, "l": [1, 2], "s": "base", "n": 1}  # untouched
    out["a"]["y"]["p"] = 9
    assert base["a"]["y"]["p"] == 1  # no shared mapping


def test_base_chain_relative_to_each_file(tmp_path):
    # Prepare: child -> sub/middle -> sub/grand (middle names grand relative to its own folder)
    write(
        tmp_path / "sub" / "grand.yaml", {"name": "grand", "seed": 1, "federation": {"num_rounds": 9, "eval_every": 3}}
    )
    write(tmp_path / "sub" / "middle.yaml", {"base": "grand.yaml", "federation": {"num_rounds": 5}})
    child = write(tmp_path / "child.yaml", {"base": "sub/middle.yaml", "name": "child"})
    # Execute
    data = load_with_bases(child)
    # Assert
    assert data == {"name": "child", "seed": 1, "federation": {"num_rounds": 5, "eval_every": 3}}


def test_base_resolves_into_a_spec(tmp_path, fake_federated):
    # Prepare
    write(tmp_path / "a.yaml", {"name": "a", "strategy": {"name": "fedavg"}, "federation": {"num_rounds": 9}})
    child = write(
        tmp_path / "b.yaml", {"base": "a.yaml", "name": "b", "strategy": {"name": "feddu", "params": {"C": 2}}}
    )
    # Execute
    spec = ExperimentSpec.from_yaml(child, {"federation.eval_every": 2})
    # Assert
    assert (spec.name, spec.strategy.name, spec.strategy.params) == ("b", "feddu", {"C": 2})
    assert (spec.federation.num_rounds, spec.federation.eval_every) == (9, 2)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"a.yaml": {"base": "b.yaml"}, "b.yaml": {"base": "a.yaml"}},
            "b.yaml: base: files inherit from each other in a cycle (a.yaml -> b.yaml -> a.yaml); remove one base:",
        ),
        ({"a.yaml": {"base": "a.yaml"}}, "a.yaml: base: files inherit from each other in a cycle (a.yaml -> a.yaml)"),
        ({"a.yaml": {"base": "missing.yaml"}}, "a.yaml: base: experiment file"),
        ({"a.yaml": {"base": 3}}, "a.yaml: base: expected the path of another experiment YAML, got 3"),
        ({"a.yaml": {"base": "b.yaml"}, "b.yaml": "x: [1\n"}, "b.yaml: not valid YAML"),
    ],
)
def test_bad_bases_are_one_line_errors(tmp_path, files, message):
    # Prepare
    for name, content in files.items():
        write(tmp_path / name, content)
    # Execute
    with pytest.raises(ConfigError) as err:
        load_with_bases(tmp_path / "a.yaml")
    # Assert
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the config file is empty"),
        (b"# only a comment\n", "the config file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text file (cannot read it as UTF-8)"),
        (b"- a\n- b\n", "top level must be a mapping of sections, got list"),
        (b"a: [1\n", "not valid YAML"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    # Prepare
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    # Execute
    with pytest.raises(ConfigError) as err:
        read_mapping(path)
    # Assert
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        ExperimentSpec.from_yaml(tmp_path / "nope.yaml")


def test_plugin_paths_are_relative_to_the_file_that_lists_them(tmp_path):
    # Prepare: a user recipe module in a folder next to the base file; the child lives elsewhere
    module = f"user_recipe_{tmp_path.name.replace('-', '_')}"
    write(
        tmp_path / "conf" / "plugins" / f"{module}.py",
        "from dataclasses import dataclass\n\n"
        "@dataclass(frozen=True)\nclass Steps:\n    n: int = 1\n\n"
        "class R:\n    sections = {'steps': Steps}\n\n    @classmethod\n    def validate(cls, spec):\n        pass\n",
    )
    write(tmp_path / "conf" / "base.yaml", {"recipe": f"{module}:R", "plugins": {"paths": ["plugins"]}})
    child = write(tmp_path / "exp" / "child.yaml", {"base": "../conf/base.yaml", "steps": {"n": 4}})
    # Execute
    spec = ExperimentSpec.from_yaml(child)
    # Assert
    folder = str((tmp_path / "conf" / "plugins").resolve())
    assert spec.plugins.paths == (folder,) and folder in sys.path
    assert spec.steps.n == 4 and spec.to_dict()["plugins"] == {"paths": [folder]}


def test_config_package_is_a_leaf():
    # Prepare
    code = (
        "import sys, fedtwin.orchestrator.config\n"
        "import fedtwin.orchestrator.config.files, fedtwin.orchestrator.config.loader\n"
        "import fedtwin.orchestrator.config.recipes\n"
        "from fedtwin.orchestrator.config import *  # every public name, loading every module\n"
        "print(sorted(m for m in sys.modules if m.startswith('fedtwin.orchestrator.recipes')))"
    )
    # Execute
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    # Assert
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_config_sources_import_no_recipe_module():
    # Function-level imports would not show in sys.modules until called; read the sources instead.
    for path in sorted((ROOT / "orchestrator" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith("fedtwin.orchestrator.recipes") for n in names), f"{path.name} imports {names}"
