"""Strict YAML (a key given twice names the dotted key and both lines) and file-system-safe names."""

from __future__ import annotations

import pytest
import yaml

from fedtwin.orchestrator.config.files import read_mapping
from fedtwin.orchestrator.config.loader import ConfigError, coerce
from fedtwin.orchestrator.config.names import RUN_SUFFIX_BYTES, check_folder_name, check_run_name, name_problem
from fedtwin.orchestrator.config.yaml_strict import DuplicateKeyError, TooLargeError, load_yaml
from fedtwin.orchestrator.tune.sweep_config import load_sweep


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("a: 1\nb: 2\na: 3\n", "a", (1, 3)),
        ("t:\n  lr: 1\n  x: 2\n  lr: 3\n", "t.lr", (2, 4)),
        ("l:\n  - {k: 1, k: 2}\n", "l[0].k", (2, 2)),
        ("1: a\n0x1: b\n", "1", (1, 2)),  # the same integer key, written two ways
        ("yes: a\ntrue: b\n", "True", (1, 2)),
    ],
)
def test_a_key_given_twice_names_the_dotted_key_and_both_lines(text, key, lines):
    with pytest.raises(DuplicateKeyError) as err:
        load_yaml(text)
    assert (err.value.key, err.value.first, err.value.second) == (key, *lines)
    assert f"key '{key}' appears twice (line {lines[0]} and line {lines[1]})" in str(err.value)


def test_everything_else_loads_as_safe_load_does():
    text = "base: &b {x: 1, y: [1, 2]}\nother:\n  <<: *b\n  x: 2\nlist: [*b, *b]\nempty: {}\n"
    assert load_yaml(text) == yaml.safe_load(text)
    assert load_yaml(text)["other"] == {"x": 2, "y": [1, 2]}  # a merged key may be overridden
    assert load_yaml("") is None and load_yaml("# c\n") is None
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1\n")
    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object:os.system {}\n")  # still the safe loader


def test_read_mapping_reports_duplicates_with_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntraining:\n  lr: 0.1\ntraining:\n  lr: 0.2\n")
    with pytest.raises(ConfigError) as err:
        read_mapping(path)
    assert str(err.value) == f"{path}: key 'training' appears twice (line 2 and line 4); keep one of them"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("quickstart", None),
        ("fedavg_lr0.1-seed=3+x", None),
        ("é" * 117, None),  # 234 bytes: fits with the timestamp
        ("é" * 118, "is 236 bytes long; at most 234"),
        ("x" * 235, "is 235 bytes long"),
        ("", "must not be empty"),
        (".", "is not a folder name"),
        ("..", "is not a folder name"),
        ("a/b", "must not contain '/'"),
        ("a\x00b", "must not contain '\\x00'"),
        ("tab\there", "must not contain '\\t'"),
        ("a:b", "must not contain ':'"),
        (".hidden", "must not start with '.'"),
        ("-rf", "must not start with '-'"),
        (" x", "must not start or end with a space"),
        ("x ", "must not start or end with a space"),
        ("\udcff", "is not valid Unicode text"),  # a byte of a non-UTF-8 argument
        (3, "must be a string"),
    ],
)
def test_run_names_must_make_a_folder_name_with_the_timestamp(name, problem):
    found = name_problem(name, RUN_SUFFIX_BYTES)
    assert found == problem if problem is None else problem in found
    if problem is not None:
        with pytest.raises(ValueError, match=r"^name: "):
            check_run_name(name)


def test_a_sweep_name_has_no_suffix_so_it_may_be_longer():
    check_folder_name("s" * 255)
    with pytest.raises(ValueError, match="is 256 bytes long; at most 255"):
        check_folder_name("s" * 256)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_float_settings_must_be_finite(value):
    with pytest.raises(ConfigError, match=r"^training.lr: expected a finite number"):
        coerce(float, value, "training.lr")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_int_settings_must_fit_64_bits(value):
    assert coerce(int, 2**63 - 1, "seed") == 2**63 - 1
    with pytest.raises(ConfigError, match=r"^seed: .* is out of range"):
        coerce(int, value, "seed")


@pytest.mark.parametrize(
    ("sweep_text", "message"),
    [
        ("base: base.yaml\nname: s\nname: t\nsearch_space: {seed: {grid: [0, 1]}}\n", "key 'name' appears twice"),
        (f"base: base.yaml\nname: {'s' * 256}\nsearch_space: {{seed: {{grid: [0, 1]}}}}\n", "name: is 256 bytes"),
        ("base: base.yaml\nname: ..\nsearch_space: {seed: {grid: [0, 1]}}\n", "'..' is not a folder name"),
    ],
)
def test_sweep_files_are_strict_too(tmp_path, sweep_text, message):
    (tmp_path / "base.yaml").write_text("name: b\nseed: 1\nseed: 2\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text)
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_the_base_of_a_sweep_is_read_strictly(tmp_path):
    (tmp_path / "base.yaml").write_text("name: b\nseed: 1\nseed: 2\n")
    path = tmp_path / "sweep.yaml"
    path.write_text("base: base.yaml\nsearch_space: {seed: {grid: [0, 1]}}\n")
    with pytest.raises(ConfigError, match=r"base.yaml: key 'seed' appears twice \(line 2 and line 3\)"):
        load_sweep(path)


def test_aliases_that_expand_to_billions_of_values_are_refused_at_once():
    lines = ["a0: &a0 {k: 1}"]
    lines += [f"a{i}: &a{i} {{" + ", ".join(f"x{j}: *a{i - 1}" for j in range(10)) + "}" for i in range(1, 10)]
    with pytest.raises(TooLargeError, match="more than 1,000,000 values"):
        load_yaml("\n".join(lines))
    assert load_yaml("a: &a [1, *a]")["a"][0] == 1  # a recursive alias is one value, not an endless one
