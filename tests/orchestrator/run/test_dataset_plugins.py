"""Dataset plugins in ``data_prep``: made once per settings, validated, errors naming ``data.dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtwin.orchestrator.config.sections import DataConfig
from fedtwin.orchestrator.run.data_prep import ensure_dataset, ensure_partition
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import load_split, write_dataset
from fedtwin.pipelines.data.manifest import load_dataset_manifest
from fedtwin.pipelines.data.partition import PartitionConfig
from fedtwin.pipelines.plugins import PluginError

CALLS: list[tuple[str, dict, int]] = []


def make_constant(out_dir: Path, params: dict, seed: int) -> None:
    """A user's dataset: ``per_class`` clips per class whose pixels all equal the label (x ``scale``)."""
    CALLS.append((str(out_dir), dict(params), seed))
    per_class, classes = params.get("per_class", 3), 4

    def split(offset: int) -> ClipArrays:
        labels = np.repeat(np.arange(classes), per_class)
        clips = np.broadcast_to(
            (labels * params.get("scale", 10)).astype(np.uint8)[:, None, None, None, None], (len(labels), 2, 1, 4, 4)
        ).copy()
        return ClipArrays(clips, labels.astype(np.int64), np.asarray([f"c{offset + i}" for i in range(len(labels))]))

    write_dataset(out_dir, {"train": split(0), "test": split(1000)}, {"class_names": list("abcd"), "seed": seed})


def make_picky(out_dir: Path, params: dict, seed: int) -> None:
    raise ValueError(f"scale: must be < 5, got {params['scale']}")


def make_nothing(out_dir: Path, params: dict, seed: int) -> None:
    out_dir.mkdir()


def make_train_only(out_dir: Path, params: dict, seed: int) -> None:
    clips = ClipArrays(np.zeros((2, 2, 1, 4, 4), np.uint8), np.zeros(2, np.int64), np.asarray(["a", "b"]))
    write_dataset(out_dir, {"train": clips}, {"class_names": ["only"]})


def make_lying(out_dir: Path, params: dict, seed: int) -> None:
    make_constant(out_dir, params, seed)
    (out_dir / "test.parquet").write_bytes(b"not parquet")


def two_args(out_dir: Path, params: dict) -> None:
    """Not a dataset plugin: it cannot take the seed."""


def data(root: Path, dataset: str, **kwargs) -> DataConfig:
    return DataConfig(root=str(root), dataset=dataset, partition=PartitionConfig(devices=2, scheme="iid"), **kwargs)


def test_plugin_dataset_is_made_once_and_partitioned(tmp_path: Path) -> None:
    CALLS.clear()
    cfg = data(tmp_path, f"{__name__}:make_constant", dataset_params={"scale": 20}, seed=7)

    first = ensure_dataset(cfg)
    again = ensure_dataset(cfg)
    partition = ensure_partition(cfg)

    assert first == again and len(CALLS) == 1 and CALLS[0][1:] == ({"scale": 20}, 7)
    assert first.parent == tmp_path / "datasets" and first.name.startswith(f"{__name__}-make_constant-")
    assert load_dataset_manifest(first).info["seed"] == 7
    assert int(load_split(first, "train").clips.max()) == 60  # label 3 x scale 20
    assert partition.parent == tmp_path / "partitions" and partition.name.startswith(first.name)
    other = ensure_dataset(data(tmp_path, f"{__name__}:make_constant", dataset_params={"scale": 30}, seed=7))
    assert other != first and len(CALLS) == 2  # other settings, other folder
    assert [p.name for p in (tmp_path / "datasets").iterdir() if p.name.startswith(".")] == []  # no temp left


def test_builtin_moving_digits_plugin_takes_generator_fields(tmp_path: Path) -> None:
    params = {"size": 8, "digit_size": 8, "frames": 2, "train_per_class": 2, "test_per_class": 1}

    path = ensure_dataset(data(tmp_path, "moving-digits", dataset_params=params))

    assert load_dataset_manifest(path).clip_shape == (2, 1, 8, 8)
    with pytest.raises(FedtwinError, match=r"^data\.dataset_params\.sise: unknown key \(did you mean 'size'\?\)"):
        ensure_dataset(data(tmp_path, "moving-digits", dataset_params={"sise": 8}))


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            "make_picky",
            r"^data\.dataset_params: dataset '.*:make_picky' rejected them \(ValueError: scale: must be < 5, got 9\)$",
        ),
        (
            "make_nothing",
            r"^data\.dataset: '.*:make_nothing' wrote no manifest\.json into out_dir; a dataset plugin must",
        ),
        ("make_train_only", r"^data\.dataset: '.*:make_train_only' wrote no test split;"),
        ("make_lying", r"^data\.dataset: '.*:make_lying' wrote an invalid dataset \(.*test\.parquet"),
        (
            "two_args",
            r"^data\.dataset: '.*:two_args' resolved to function .* "
            r"which is not a callable make\(out_dir, params, seed\)$",
        ),
        ("make_nowhere", r"^data\.dataset: module '.*' has no attribute 'make_nowhere'"),
    ],
)
def test_broken_plugins_are_one_line_errors_and_leave_nothing(tmp_path: Path, plugin: str, message: str) -> None:
    with pytest.raises(FedtwinError, match=message) as err:
        ensure_dataset(data(tmp_path, f"{__name__}:{plugin}", dataset_params={"scale": 9}))

    assert "\n" not in str(err.value)
    assert not (tmp_path / "datasets").exists() or list((tmp_path / "datasets").iterdir()) == []


def test_unknown_dataset_name_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(
        PluginError, match=r"^data\.dataset: unknown dataset 'moving-digit'; did you mean 'moving-digits'\?"
    ):
        ensure_dataset(data(tmp_path, "moving-digit"))


def test_dataset_and_path_together_are_refused(tmp_path: Path) -> None:
    cfg = DataConfig(path=str(tmp_path), dataset="moving-digits")

    with pytest.raises(
        FedtwinError, match="^data.dataset: 'moving-digits' and data.path .* both name the data; set one"
    ):
        ensure_partition(cfg)
