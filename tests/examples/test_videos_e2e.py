"""Bring your own videos, end to end: encode real files, import, partition by camera, run two rounds.

24 short videos (3 classes x 8, filmed by 4 cameras) in mp4 (H.264), webm (VP9) and avi (MJPEG), plus
one truncated download, go through the commands of the README section "Bring your own videos", each
as its own ``python -m fedtwin.orchestrator.cli`` process: ``data import-videos`` with a CSV index (path,
label, split, group), ``data partition --scheme by-group`` and ``run`` with an embedded Ray.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("av")

from fedtwin.pipelines.data.dataset_io import load_split  # noqa: E402
from fedtwin.pipelines.data.manifest import load_dataset_manifest  # noqa: E402
from fedtwin.pipelines.data.partition_manifest import load_device_shard, load_partition_manifest  # noqa: E402
from tests.pipelines.data.video_fixtures import encode, luma, psnr, synthetic_frames, truncate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("down", "left", "right")  # sorted, as the importer numbers them
CONTAINERS = ("mp4", "webm", "avi")
CAMERAS = 4
FRAMES = 12  # per video; clips of 4 frames at stride 2 start at frames 1 and 4


def fedtwin(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m fedtwin.orchestrator.cli ARGV`` in ``cwd`` with an embedded Ray of its own."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def class_frames(label: int, phase: int) -> np.ndarray:
    """(FRAMES, 48, 48, 3) frames whose motion tells the class: the bright square moves down, left or right."""
    frames = synthetic_frames(FRAMES, phase=phase)  # moving right
    return [frames.transpose(0, 2, 1, 3), frames[:, :, ::-1], frames][label].copy()


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """videos/<class>/v<k>.<container> and index.csv; videos 6 and 7 of each class are test videos."""
    root = tmp_path_factory.mktemp("byov")
    rows = ["path,label,split,group"]
    for c, label in enumerate(CLASSES):
        for k in range(8):
            name = f"{label}/v{k}.{CONTAINERS[k % 3]}"
            encode(root / "videos" / name, class_frames(c, phase=3 * k))
            rows.append(f"videos/{name},{label},{'test' if k >= 6 else 'train'},cam{k % CAMERAS}")
    broken = truncate(encode(root / "videos" / "left" / "broken.mp4", class_frames(1, 0), faststart=True), 0.5)
    rows.append(f"videos/{broken.relative_to(root / 'videos')},left,train,cam0")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


# Slow: the default run imports real videos through the CLI (tests/orchestrator/cli/test_data_videos.py,
# tests/pipelines/data/test_video_import.py) and runs federated rounds on Ray elsewhere; this joins them.
@pytest.mark.slow
def test_import_partition_by_group_and_two_federated_rounds(videos, tmp_path):
    # Execute 1: import (in this process's cwd = the test folder; paths relative to the index)
    imported = fedtwin(
        "data",
        "import-videos",
        "--index",
        str(videos / "index.csv"),
        "ds",
        "--frames",
        "4",
        "--stride",
        "2",
        "--clips-per-video",
        "2",
        "--size",
        "16x16",
        "--workers",
        "2",
        "--quiet",
        cwd=tmp_path,
    )

    # Assert 1: 24 good videos x 2 clips, the truncated file skipped, labels and groups from the index
    assert imported.returncode == 0, imported.stderr
    m = load_dataset_manifest(tmp_path / "ds")
    assert m.clip_shape == (4, 1, 16, 16) and m.class_names == CLASSES
    assert [s["path"] for s in m.info["skipped"]] == ["videos/left/broken.mp4"]
    assert m.info["groups"] == [f"cam{g}" for g in range(CAMERAS)]
    train, test = load_split(tmp_path / "ds", "train"), load_split(tmp_path / "ds", "test")
    assert (len(train), len(test)) == (3 * 6 * 2, 3 * 2 * 2)
    assert np.bincount(train.labels).tolist() == [12, 12, 12] and np.bincount(test.labels).tolist() == [4, 4, 4]
    # decoded frames match the encoded ones within codec loss (16x16 is a 3x3 area mean of 48x48)
    for k in range(3):  # one video per container
        clips = train.clips[train.video_ids == f"videos/right/v{k}.{CONTAINERS[k]}"]
        expected = luma(class_frames(2, phase=3 * k)).reshape(FRAMES, 16, 3, 16, 3).mean(axis=(2, 4))
        assert psnr(clips[0, :, 0], np.rint(expected[[1, 3, 5, 7]])) > 28, CONTAINERS[k]
        assert psnr(clips[1, :, 0], np.rint(expected[[4, 6, 8, 10]])) > 28, CONTAINERS[k]

    # Execute 2: one device per camera
    parted = fedtwin(
        "data",
        "partition",
        "ds",
        "parts",
        "--scheme",
        "by-group",
        "--shared-fraction",
        "0.1",
        "--seed",
        "0",
        cwd=tmp_path,
    )

    # Assert 2: devices in camera order, every video whole on the device of its camera
    assert parted.returncode == 0, parted.stderr
    assert "groups: 0=cam0, 1=cam1, 2=cam2, 3=cam3" in parted.stdout
    p = load_partition_manifest(tmp_path / "parts")
    assert p.num_devices == CAMERAS and p.device_groups == ("cam0", "cam1", "cam2", "cam3")
    for d in range(CAMERAS):
        ids = load_device_shard(p, d).video_ids
        assert {int(v.rsplit("/v", 1)[1][0]) % CAMERAS for v in ids} == {d}
        assert all(np.sum(ids == v) == 2 for v in ids)  # both clips of each video
    assert png_size(tmp_path / "parts" / "plots" / "partition.png")[0] > 600

    # Execute 3: two federated rounds on two device hosts
    cfg = {
        "name": "byov",
        "recipe": "federated",
        "seed": 0,
        "data": {"path": str(tmp_path / "parts")},
        "model": {"arch": "tiny3d", "widths": [4, 8], "num_classes": 3, "frames": 4, "in_channels": 1},
        "training": {"epochs": 2, "batch_size": 4, "optimizer": "adam", "lr": 0.01},
        "federation": {"num_rounds": 2, "devices_per_round": 4, "round_timeout_s": 120},
        "strategy": {"name": "fedavg"},
        "resources": {"hosts": 2, "cpus_per_host": 0.5, "server_cpus": 0.5},
        "ray": {"num_cpus": 2, "object_store_mb": 100},
        "run": {"output_dir": str(tmp_path / "runs"), "checkpoint_every": 1},
    }
    (tmp_path / "byov.yaml").write_text(yaml.safe_dump(cfg))
    run = fedtwin("run", "byov.yaml", "--quiet", cwd=tmp_path)

    # Assert 3: a finished run with per-class accuracy, a confusion matrix and its pictures
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["num_devices"] == CAMERAS
    assert list(summary["per_class_accuracy"]) == list(CLASSES)
    confusion = np.asarray(summary["confusion_matrix"])
    assert confusion.shape == (3, 3) and confusion.sum(axis=1).tolist() == [4, 4, 4]
    assert np.trace(confusion) / 12 == pytest.approx(summary["final_test_accuracy"])
    for c, name in enumerate(CLASSES):
        assert summary["per_class_accuracy"][name] == pytest.approx(confusion[c, c] / 4)
    for plot in ("accuracy.png", "confusion.png"):
        assert png_size(run_dir / "plots" / plot)[0] > 300
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2] and all(r["devices_ok"] == 4 for r in records)
