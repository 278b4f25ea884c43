"""Paths and URIs through ``fedtwin.pipelines.core.storage``, against the local disk and a real S3 API (moto).

Fast (no Ray): names and schemes, reads and writes both ways, one-line errors for bad URIs, datasets and
partitions made straight into a bucket and read back row group by row group, run folders and
checkpoints on object storage (marker last, resume downloads the newest complete one and falls back
over a damaged one), and bad URIs through ``fedtwin run``/``tune`` failing with exit 2 before Ray starts.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedtwin.orchestrator.cli.main import main
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, save_checkpoint
from fedtwin.orchestrator.run.run_folder import RunFolder, remote_checkpoints
from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.storage import StorageError
from fedtwin.pipelines.data.partition_manifest import load_device_shard, load_partition_manifest, load_test
from tests.orchestrator.storage.conftest import BUCKET

B = f"s3://{BUCKET}"


def test_names_schemes_and_local_round_trip(tmp_path):
    assert storage.is_uri("s3://b/k") and storage.is_remote("gs://b/k") and not storage.is_remote("file:///x")
    assert not storage.is_uri("runs/x") and storage.scheme_of("runs") == ""
    assert storage.join("s3://b/runs/", "x", "/y/") == "s3://b/runs/x/y"
    assert storage.join("runs", "x") == str(Path("runs", "x"))
    assert storage.as_location("file:///tmp/a") == Path("/tmp/a") and storage.as_location("s3://b/a") == "s3://b/a"
    assert storage.child(Path("/p"), "m.json") == Path("/p/m.json") and storage.child("s3://b/p", "m") == "s3://b/p/m"
    assert storage.name_of("s3://b/runs/x/") == "x" and storage.parent_of("s3://b/runs/x") == "s3://b/runs"
    with pytest.raises(StorageError, match=r"^OUT ftp://h/x: unknown scheme 'ftp://'; use a local path"):
        storage.check_location("ftp://h/x", "OUT")
    with pytest.raises(StorageError, match=r"no bucket in the URI; write s3://BUCKET/prefix"):
        storage.check_scheme("s3:///x", "data.path")
    storage.write_text_atomic(tmp_path / "a" / "b.txt", "hi")
    assert storage.read_text(tmp_path / "a" / "b.txt") == "hi" and storage.list_dir(tmp_path / "a") == ["b.txt"]
    storage.upload_dir(tmp_path / "a", f"file://{tmp_path}/c")
    assert (tmp_path / "c" / "b.txt").read_text() == "hi"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(tmp_path / "missing")


def test_s3_reads_writes_listing_and_one_line_errors(s3, monkeypatch):
    assert storage.resolve(f"{B}/k/")[1] == f"{BUCKET}/k"
    big = np.random.default_rng(0).integers(0, 255, 11 * 2**20, dtype=np.uint8).tobytes()  # > one 5 MiB part
    storage.write_bytes_atomic(f"{B}/t/big.bin", big)
    storage.write_text_atomic(f"{B}/t/sub/small.txt", "x")
    assert storage.read_bytes(f"{B}/t/big.bin") == big
    assert storage.list_dir(f"{B}/t") == ["big.bin", "sub"]
    assert storage.list_files(f"{B}/t") == ["big.bin", "sub/small.txt"]
    assert storage.is_dir(f"{B}/t") and storage.is_file(f"{B}/t/big.bin") and not storage.exists(f"{B}/t/nope")
    with storage.open_input_file(f"{B}/t/big.bin") as fh:  # random access: a range, not the whole object
        fh.seek(5 * 2**20)
        assert fh.read(4) == big[5 * 2**20 : 5 * 2**20 + 4]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{B}/t/nope")
    storage.delete_dir(f"{B}/t")
    assert storage.list_dir(f"{B}/t") == []
    storage.check_location(f"{B}/runs", "run.output_dir", writable=True)
    with pytest.raises(StorageError) as err:
        storage.check_location("s3://nobucket/x", "data.path")
    assert str(err.value) == "data.path s3://nobucket/x: bucket 'nobucket' does not exist; create it or fix data.path"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(StorageError, match=r"^data.path s3://fedtwin/x: no AWS credentials found; set AWS_ACCESS"):
        storage.check_location(f"{B}/x", "data.path")


def test_data_made_and_partitioned_into_a_bucket_reads_like_local_data(s3, tmp_path, capsys):
    # Prepare / Execute: the same dataset locally and in the bucket, partitioned the same way
    make = ["data", "make", "moving-digits", "--train-per-class", "6", "--test-per-class", "2", "--seed", "1"]
    part = ["--devices", "4", "--scheme", "iid", "--seed", "0", "--shared-fraction", "0.25"]
    assert main([*make[:3], str(tmp_path / "d"), *make[3:]]) == 0
    assert main(["data", "partition", str(tmp_path / "d"), str(tmp_path / "p"), *part, "--no-plot"]) == 0
    assert main([*make[:3], f"{B}/u/d", *make[3:]]) == 0
    assert main(["data", "partition", f"{B}/u/d", f"{B}/u/p", *part]) == 0
    out = capsys.readouterr().out
    # Assert: outputs named by their URI, the manifest uploaded, shards equal to the local ones
    assert f"wrote {B}/u/p: 4 devices" in out and f"plot: {B}/u/p/plots/partition.png" in out
    remote, local = load_partition_manifest(f"{B}/u/p"), load_partition_manifest(tmp_path / "p")
    assert remote.directory == f"{B}/u/p" and remote.device(0).path == f"{B}/u/p/devices/part-00000.parquet"
    assert remote.source["path"] == f"{B}/u/d" and len(remote.content_key) == 16
    for d in range(4):
        a, b = load_device_shard(remote, d), load_device_shard(local, d)
        assert np.array_equal(a.clips, b.clips) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(load_test(remote).labels, load_test(local).labels)
    # a second make into the same prefix is refused (exit 2, one line)
    assert main([*make[:3], f"{B}/u/d", *make[3:]]) == 2
    assert capsys.readouterr().err.strip() == (
        f"fedtwin: error: {B}/u/d: already exists and is not empty; choose another OUT or pass --overwrite"
    )


def test_import_videos_into_a_bucket(s3, tmp_path, capsys):
    pytest.importorskip("av")
    from fedtwin.pipelines.data.dataset_io import load_split
    from tests.pipelines.data.video_fixtures import encode, synthetic_frames

    for c, label in enumerate(("run", "walk")):
        for k in range(2):
            encode(tmp_path / "videos" / label / f"{k}.mp4", synthetic_frames(12, phase=3 * c + k))
    assert (
        main(
            [
                "data",
                "import-videos",
                str(tmp_path / "videos"),
                f"{B}/vid",
                "--frames",
                "4",
                "--size",
                "16x16",
                "--clips-per-video",
                "1",
                "--test-fraction",
                "0.5",
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert f"wrote {B}/vid: " in capsys.readouterr().out
    train = load_split(f"{B}/vid", "train")
    assert train.clips.shape[1:] == (4, 1, 16, 16) and sorted(set(train.labels.tolist())) == [0, 1]


def test_generated_data_under_a_uri_root_is_made_once(s3):
    from fedtwin.orchestrator.config.sections import DataConfig
    from fedtwin.orchestrator.run.data_prep import ensure_partition
    from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig
    from fedtwin.pipelines.data.partition import PartitionConfig

    data = DataConfig(
        root=f"{B}/root",
        generator=MovingDigitsConfig(train_per_class=4, test_per_class=2),
        partition=PartitionConfig(devices=3, scheme="iid", seed=0),
    )
    first = ensure_partition(data)
    assert isinstance(first, str) and first.startswith(f"{B}/root/partitions/moving-digits-")
    stamp = storage.filesystem(first).get_file_info(storage.resolve(f"{first}/manifest.json")[1]).mtime
    assert ensure_partition(data) == first  # reused, not made again
    assert storage.filesystem(first).get_file_info(storage.resolve(f"{first}/manifest.json")[1]).mtime == stamp
    assert load_partition_manifest(first).num_devices == 3


def test_run_folder_on_s3_publishes_checkpoints_marker_last_and_resumes(s3):
    # Prepare: a run folder in the bucket with three checkpoints (keep 2)
    run = RunFolder.create(f"{B}/runs", "unit")
    assert run.remote and run.location.startswith(f"{B}/runs/unit-") and run.path.is_dir()
    run.save_spec({"name": "unit"})
    model = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    for n in (1, 2, 3):
        run.append_metrics({"round": n, "acc": n / 10})
        run.publish_checkpoint(save_checkpoint(run.checkpoints, n, model, {"s": {"m": np.ones(2)}}, {"k": n}, keep=2))
    # a checkpoint whose upload died before its marker: never taken
    storage.write_bytes_atomic(f"{run.location}/checkpoints/step-00004/model.safetensors", b"partial")
    run.write_summary({"ok": True})
    run.close()
    # Assert
    assert not run.path.exists()  # the working copy is gone, the bucket has everything
    assert remote_checkpoints(run.location) == ["step-00002", "step-00003"]
    files = storage.list_files(run.location)
    assert {"spec.yaml", "metrics.jsonl", "summary.json", "checkpoints/step-00003/state.safetensors"} <= set(files)
    resumed = RunFolder.attach(run.location, resume=True)
    ckpt = latest_checkpoint(resumed.checkpoints)
    assert ckpt.round_num == 3 and np.array_equal(ckpt.model["w"], model["w"]) and ckpt.meta["k"] == 3
    assert [r["round"] for r in resumed.read_metrics()] == [1, 2, 3] and resumed.load_spec() == {"name": "unit"}
    assert sorted(p.name for p in resumed.checkpoints.iterdir()) == ["step-00003"]  # only the newest comes down
    resumed.close()


@pytest.mark.parametrize("how", ["truncated", "bytes-flipped", "file-missing"])
def test_resume_from_s3_falls_back_over_a_damaged_newest_checkpoint_bit_identically(s3, tmp_path, caplog, how):
    # Prepare: a toy run (no Ray) into the bucket, and the same run whose driver dies after step 4's checkpoint
    from fedtwin import ExperimentSpec, run_experiment
    from tests.orchestrator.run.test_checkpoint import DAMAGE
    from tests.orchestrator.run.test_loop import TOY, Recorder

    def spec(out):
        return ExperimentSpec.from_dict(
            {"name": "toy", "recipe": TOY, "toy": {"epochs": 6}, "run": {"output_dir": out, "checkpoint_every": 1}}
        )

    full = run_experiment(spec(str(tmp_path / "full")))
    run_uri = f"{B}/fallback-{how}"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec(f"{B}/unused"), run_dir=run_uri, callbacks=[Recorder(crash_after=4)])
    assert remote_checkpoints(run_uri) == ["step-00003", "step-00004"]
    newest = tmp_path / "newest"  # damage the uploaded newest checkpoint the way a disk or a copy would
    storage.download_dir(f"{run_uri}/checkpoints/step-00004", newest)
    damage, reason = DAMAGE[how]
    damage(newest)
    storage.delete_dir(f"{run_uri}/checkpoints/step-00004")
    storage.upload_dir(newest, f"{run_uri}/checkpoints/step-00004", last=["meta.json"])
    # Execute
    caplog.clear()
    resumed = run_experiment(spec(f"{B}/unused"), run_dir=run_uri, resume=True)
    # Assert: one warning naming the damage, steps 4..6 replayed, the weights of the uninterrupted run
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped damaged checkpoint step-00004" in warnings[0] and reason in warnings[0]
    assert resumed.summary["weights"] == full.summary["weights"]
    assert remote_checkpoints(run_uri) == ["step-00005", "step-00006"]
    again = RunFolder.attach(run_uri, resume=True)
    assert [r["epoch"] for r in again.read_metrics()] == list(range(7))
    again.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--set", "data.path=s3://nobucket/x"],
            "data.path s3://nobucket/x: bucket 'nobucket' does not exist; create it or fix data.path",
        ),
        (
            ["--output", "s3://nobucket/runs"],
            "run.output_dir s3://nobucket/runs: bucket 'nobucket' does not exist; create it or fix run.output_dir",
        ),
        (["--output", "hdfs://x/runs"], "--output hdfs://x/runs: unknown scheme 'hdfs://'"),
        (
            ["--set", f"data.path={B}/nothing-here"],
            f"data.path {B}/nothing-here: no such folder; point it at a partition",
        ),
        (
            ["--set", "data.root=s3://nobucket/data"],
            "data.root s3://nobucket/data: bucket 'nobucket' does not exist; create it or fix data.root",
        ),
    ],
)
def test_bad_uris_fail_in_one_line_before_ray(s3, tmp_path, capsys, args, message):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "bad",
                "federation": {"num_rounds": 1, "devices_per_round": 2},
                "data": {"root": str(tmp_path / "data"), "generator": {"train_per_class": 4, "test_per_class": 2}},
                "run": {"output_dir": str(tmp_path / "runs")},
            }
        )
    )
    import ray

    before = ray.is_initialized()
    started = time.monotonic()
    assert main(["run", str(cfg), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedtwin: error: {message}") and err.count("\n") == 1, err
    assert ray.is_initialized() == before and time.monotonic() - started < 20
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_resume_and_tune_with_bad_uris_and_no_credentials(s3, tmp_path, capsys, monkeypatch):
    assert main(["run", "--resume", f"{B}/runs/none"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"fedtwin: error: --resume {B}/runs/none: no spec.yaml there; pass a folder created by `fedtwin run`"
    )
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "b", "resources": {"hosts": 1}}))
    (tmp_path / "sweep.yaml").write_text(
        yaml.safe_dump(
            {
                "base": "base.yaml",
                "name": "s",
                "output_dir": "s3://nobucket/sweeps",
                "search_space": {"training.lr": {"grid": [0.01, 0.02]}},
                "search": {"algorithm": "grid"},
            }
        )
    )
    assert main(["tune", str(tmp_path / "sweep.yaml")]) == 2
    assert "output_dir s3://nobucket/sweeps/s: bucket 'nobucket' does not exist" in capsys.readouterr().err
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert main(["data", "make", "moving-digits", f"{B}/nocreds"]) == 2
    assert capsys.readouterr().err.startswith(f"fedtwin: error: OUT {B}/nocreds: no AWS credentials found")
