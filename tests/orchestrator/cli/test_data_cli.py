"""``fedtwin data make`` / ``data partition`` handlers, driven through a real argparse parser."""

from __future__ import annotations

import argparse

import pytest

from fedtwin.orchestrator.cli.data import add_data_commands
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.partition import load_partition_manifest


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fedtwin")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_make_then_partition_prints_a_summary(tmp_path, capsys):
    # Execute
    md, part = tmp_path / "md", tmp_path / "p"
    rc_make = run(
        f"data make moving-digits {md} --train-per-class 6 --test-per-class 2 --frames 3 --seed 1 "
        "--class-motion".split()
    )
    rc_part = run(
        f"data partition {md} {part} --devices 5 --scheme shards --labels-per-device 2 "
        "--shared-fraction 0.1 --seed 0".split()
    )
    out = capsys.readouterr().out

    # Assert
    assert rc_make == 0 and rc_part == 0
    assert "train 60, test 20 clips of [3, 1, 32, 32]" in out
    assert "5 devices (shards labels_per_device=2, seed 0)" in out
    assert "shared: 6 examples" in out and "test: 20 examples" in out
    m = load_partition_manifest(tmp_path / "p")
    assert m.num_examples.sum() == 54 and ((m.label_histograms > 0).sum(axis=1) == 2).all()
    assert f"plot: {part}/plots/partition.png" in out
    assert (part / "plots" / "partition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # by-group needs a group column, which generated moving digits do not have: one line, nothing written
    with pytest.raises(
        DatasetError,
        match=r"^data\.partition\.scheme: by-group needs a 'group' column, but "
        r"\S+train\.parquet has none; import the videos with an index",
    ) as err:
        run(f"data partition {md} {tmp_path / 'g'} --scheme by-group --seed 0".split())
    assert "\n" not in str(err.value) and not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--devices", "0"], "--devices: must be >= 1, got 0"),
        ([], r"--devices: must be set for scheme dirichlet \(only by-group derives it: one per group\)"),
        (["--devices", "2", "--alpha", "-1"], "--alpha: must be > 0, got -1.0"),
        (["--devices", "2", "--shared-fraction", "1.5"], r"--shared-fraction: must be in \[0, 1\), got 1.5"),
        (["--devices", "2", "--min-size", "0"], "--min-size: must be >= 1, got 0"),
    ],
)
def test_bad_partition_options_name_the_option(tmp_path, argv, message):
    with pytest.raises(DatasetError, match=f"^{message}$"):
        run(["data", "partition", str(tmp_path / "in"), str(tmp_path / "out"), "--seed", "0", *argv])


def test_bad_make_options_name_the_option(tmp_path):
    with pytest.raises(DatasetError, match="^--shift-blur: must be >= 0"):
        run(["data", "make", "moving-digits", str(tmp_path / "md"), "--shift", "--shift-blur", "-1"])
    with pytest.raises(DatasetError, match="^--train-per-class: must be >= 1"):
        run(["data", "make", "moving-digits", str(tmp_path / "md"), "--train-per-class", "0"])
    assert not (tmp_path / "md").exists()
