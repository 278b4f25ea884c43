"""Importing real video files: layouts, sampling, decoding fidelity, skipped files, determinism."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("av")

from fedtwin.pipelines.core.errors import DatasetError, FedtwinError  # noqa: E402
from fedtwin.pipelines.data.dataset_io import load_split  # noqa: E402
from fedtwin.pipelines.data.manifest import load_dataset_manifest  # noqa: E402
from fedtwin.pipelines.data.video_decode import (  # noqa: E402
    ImportConfig,
    SkipVideo,
    VideoJob,
    decode_video,
    parse_size,
    plan_clips,
    require_av,
    resample_positions,
)
from fedtwin.pipelines.data.video_import import assign_splits, import_videos  # noqa: E402
from fedtwin.pipelines.data.video_sources import discover_folders, read_index  # noqa: E402
from tests.pipelines.data.video_fixtures import (  # noqa: E402
    crashing_decoder,
    encode,
    luma,
    psnr,
    synthetic_frames,
    truncate,
)

# class -> (file name, frames) of the good videos in the folder layout
GOOD = {
    "run": [("r1.mp4", 24), ("r2.webm", 20), ("r3.avi", 16), ("r4.mov", 18)],
    "walk": [("w1.mp4", 20), ("w2.mkv", 22), ("w3.avi", 24), ("short.mp4", 4)],
}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """SRC/<class>/ with every container, a short video, a truncated file, a non-video file and a text file."""
    root = tmp_path_factory.mktemp("videos")
    for c, (label, files) in enumerate(GOOD.items()):
        for k, (name, n) in enumerate(files):
            encode(root / label / name, synthetic_frames(n, phase=5 * c + k))
    truncate(encode(root / "run" / "broken.mp4", synthetic_frames(24), faststart=True), 0.6)
    (root / "walk" / "garbage.avi").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "walk" / "notes.txt").write_text("not a video, not even a video extension")
    return root


CFG = ImportConfig(frames=6, stride=2, clips_per_video=2, size=(32, 32), test_fraction=0.25)


def test_folder_import_counts_shapes_labels_and_skips(src, tmp_path):
    # Execute
    result = import_videos(discover_folders(src), tmp_path / "ds", CFG, source=str(src))

    # Assert: classes in folder order, the two bad files skipped with a reason, the text file ignored
    m = result.manifest
    assert m.class_names == ("run", "walk") and m.clip_shape == (6, 1, 32, 32)
    skipped = {s["path"]: s["reason"] for s in m.info["skipped"]}
    assert set(skipped) == {"run/broken.mp4", "walk/garbage.avi"}
    assert re.fullmatch(r"truncated: \d+ of 24 frames", skipped["run/broken.mp4"])
    assert skipped["walk/garbage.avi"].startswith("cannot open")
    assert m.info["videos"] == {"found": 10, "imported": 8, "skipped": 2, "padded": 1}
    assert m.info["importer"]["frames"] == 6 and m.info["importer"]["split"] == "seeded"

    # every good video gives 2 clips, the 4-frame one a single padded clip; no video on both sides
    train, test = load_split(m.directory, "train"), load_split(m.directory, "test")
    assert len(train) + len(test) == 7 * 2 + 1
    assert set(train.video_ids) & set(test.video_ids) == set()
    both = np.concatenate([train.video_ids, test.video_ids])
    labels = np.concatenate([train.labels, test.labels])
    for vid, label in zip(both, labels):
        assert m.class_names[label] == vid.split("/")[0]
    counts = {v: int((both == v).sum()) for v in set(both)}
    assert counts.pop("walk/short.mp4") == 1 and set(counts.values()) == {2}
    splits = assign_splits(discover_folders(src), CFG.test_fraction, CFG.seed)
    held_out = {v.video_id for v, s in zip(discover_folders(src).videos, splits) if s == "test"}
    assert set(test.video_ids) == held_out - set(skipped) and len(held_out) == 2  # round(0.25 * 5) per class
    assert m.splits["train"].num_examples == len(train) and sum(m.splits["test"].label_histogram) == len(test)


def test_the_padded_clip_repeats_the_last_frame(src):
    # Execute: 4 frames at stride 2 give frames 0 and 2, then frame 2 again up to 6 frames
    out = decode_video(VideoJob(str(src / "walk" / "short.mp4"), "s", CFG))

    # Assert
    assert out.padded and out.clips.shape == (1, 6, 1, 32, 32)
    clip = out.clips[0].astype(int)
    assert np.abs(clip[1] - clip[0]).mean() > 1
    assert all((clip[k] == clip[1]).all() for k in range(2, 6))


def test_import_is_byte_identical_and_independent_of_workers(src, tmp_path):
    # Execute
    import_videos(discover_folders(src), tmp_path / "a", CFG)
    import_videos(discover_folders(src), tmp_path / "b", ImportConfig(**{**CFG.__dict__, "workers": 2}))

    # Assert
    for name in ("train.parquet", "test.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("suffix", ["mp4", "webm", "avi", "mkv", "mov"])
@pytest.mark.parametrize("channels", [1, 3])
def test_decoded_frames_match_the_encoded_ones(tmp_path, suffix, channels):
    # Setup
    frames = synthetic_frames(12)
    path = encode(tmp_path / f"v.{suffix}", frames)
    expected = frames if channels == 3 else luma(frames)[..., None]

    # Execute: the original size, and half of it (area resize = 2x2 block mean)
    full = decode_video(VideoJob(str(path), "v", ImportConfig(frames=12, size=(48, 48), channels=channels)))
    half = decode_video(VideoJob(str(path), "v", ImportConfig(frames=12, size=(24, 24), channels=channels)))

    # Assert
    assert psnr(full.clips[0].transpose(0, 2, 3, 1), expected) > 30
    halved = expected.reshape(12, 24, 2, 24, 2, channels).mean(axis=(2, 4))
    assert psnr(half.clips[0].transpose(0, 2, 3, 1), np.rint(halved)) > 30


def test_resize_covers_then_centre_crops_and_rotation_is_applied(tmp_path):
    # Setup: 64 wide x 48 high, a white block at the top-left; displayed rotated 90 deg counter-clockwise
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    frames[:, :16, :16] = 255
    plain = encode(tmp_path / "plain.mp4", frames)
    rotated = encode(tmp_path / "rot.mp4", frames, rotation=90)
    cfg = ImportConfig(frames=2, size=(24, 24))

    # Execute
    a = decode_video(VideoJob(str(plain), "p", cfg)).clips[0, 0, 0]
    b = decode_video(VideoJob(str(rotated), "r", cfg)).clips[0, 0, 0]

    # Assert: 48 -> 24 (x0.5), width 32 cropped to 24 from column 4: the block covers rows 0-7, cols 0-3
    assert a[:7, :3].min() > 200 and a[9:, :].max() < 60 and a[:, 5:].max() < 60
    # rotated: displayed 48 wide x 64 high, the block at the bottom-left; 64 -> 32 cropped to rows 4-27
    assert b[-3:, :7].min() > 200 and b[:-5, :].max() < 60 and b[:, 9:].max() < 60


def test_fps_resamples_a_variable_frame_rate_video(tmp_path):
    # Setup: 8 frames at irregular times (ms)
    frames = synthetic_frames(8)
    path = encode(tmp_path / "vfr.mkv", frames, pts_ms=[0, 100, 200, 600, 700, 800, 1200, 1300])

    # Execute: a 10 fps clock over 0..1.3 s gives 14 ticks
    out = decode_video(VideoJob(str(path), "v", ImportConfig(frames=14, fps=10, size=(48, 48), channels=3)))

    # Assert: each tick shows the latest frame started by then
    shown = [int(np.argmax([psnr(got, f) for f in frames])) for got in out.clips[0].transpose(0, 2, 3, 1)]
    assert shown == [0, 1, 2, 2, 2, 2, 3, 4, 5, 5, 5, 5, 6, 7]
    assert list(resample_positions(np.array([0.0, 0.1, 0.15, 0.5]), 10)) == [0, 1, 2, 2, 2, 3]


def test_clip_plans():
    even = ImportConfig(frames=4, stride=2, clips_per_video=3)  # a clip spans 7 frames
    uniform = ImportConfig(frames=4, stride=2, clips_per_video=3, sampling="uniform")

    # even: centres of 3 equal segments of the 24 - 7 + 1 = 18 possible starts
    positions, padded = plan_clips(24, even)
    assert not padded and positions[:, 0].tolist() == [3, 9, 15] and positions[0].tolist() == [3, 5, 7, 9]
    assert plan_clips(7, even)[0].tolist() == [[0, 2, 4, 6]]  # coinciding starts kept once
    assert plan_clips(8, even)[0][:, 0].tolist() == [0, 1]
    # uniform: distinct starts, the same for the same seed
    starts = plan_clips(100, uniform, 5)[0][:, 0]
    assert len(set(starts)) == 3 and starts.max() <= 93
    assert (plan_clips(100, uniform, 5)[0] == plan_clips(100, uniform, 5)[0]).all()
    assert not (plan_clips(100, uniform, 6)[0] == plan_clips(100, uniform, 5)[0]).all()
    # short: padded by repeating the last frame taken at the stride, or skipped
    positions, padded = plan_clips(4, even)
    assert padded and positions.tolist() == [[0, 2, 2, 2]]
    with pytest.raises(SkipVideo, match="too short: 4 frames, a clip spans 7"):
        plan_clips(4, ImportConfig(frames=4, stride=2, short_videos="skip"))


def test_index_with_split_and_group_columns(src, tmp_path):
    # Setup: a CSV index two folders up from the videos, with a listed file that does not exist
    index = tmp_path / "index.csv"
    rel = os.path.relpath(src, tmp_path)
    rows = [
        ("run/r1.mp4", "running", "train", "cam-a"),
        ("run/r2.webm", "running", "test", "cam-b"),
        ("walk/w1.mp4", "walking", "train", "cam-b"),
        ("walk/w3.avi", "walking", "test", "cam-a"),
        ("walk/missing.mp4", "walking", "train", "cam-a"),
    ]
    index.write_text("path,label,split,group\n" + "".join(f"{rel}/{p},{lab},{s},{g}\n" for p, lab, s, g in rows))

    # Execute
    sources = read_index(index)
    m = import_videos(sources, tmp_path / "ds", ImportConfig(frames=4, clips_per_video=1)).manifest

    # Assert
    assert m.class_names == ("running", "walking") and m.info["groups"] == ["cam-a", "cam-b"]
    assert m.info["importer"]["split"] == "index"
    assert [s["reason"] for s in m.info["skipped"]] == ["file not found"]
    table = pq.read_table(m.split_path("test"))
    assert table.column("video_id").to_pylist() == [f"{rel}/run/r2.webm", f"{rel}/walk/w3.avi"]
    assert table.column("group").to_pylist() == ["cam-b", "cam-a"]
    assert len(load_split(m.directory, "train")) == 2  # the group column does not bother readers


def test_jsonl_index_and_index_errors(src, tmp_path):
    # JSONL: paths relative to the index's folder (or to an explicit base)
    good = tmp_path / "i.jsonl"
    good.write_text(
        json.dumps({"path": "run/r1.mp4", "label": 3}) + "\n\n" + json.dumps({"path": "walk/w1.mp4", "label": 10})
    )
    sources = read_index(good, base=src)
    assert sources.class_names == ("3", "10") and sources.videos[0].path == src / "run" / "r1.mp4"

    cases = {
        "path,lab\nx.mp4,a\n": r"index has no column 'label' \(needs path, label",
        "path,label,split\nx.mp4,a,val\n": r":2: split must be one of train, test, got 'val'",
        "path,label\nx.mp4,a\nx.mp4,b\n": r":3: x.mp4 is listed twice \(also line 2\)",
        "path,label\nx.mp4,\n": r":2: empty 'label'",
        "path,label\n": "index lists no videos",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_index(bad)


def test_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        discover_folders(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no class folders"):
        discover_folders(tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no video files \(mp4\|webm"):
        discover_folders(tmp_path)
    with pytest.raises(ValueError, match="size: expected HxW"):
        parse_size("32by32")
    assert parse_size("48x64") == (48, 64) and parse_size("20") == (20, 20)


def test_nothing_decodable_is_an_error_and_writes_nothing(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.mp4").write_bytes(b"nope")
    with pytest.raises(DatasetError, match=r"no video gave a clip \(1 skipped; first: a/x.mp4: cannot open"):
        import_videos(discover_folders(tmp_path / "src"), tmp_path / "out", CFG)
    assert not (tmp_path / "out").exists()


def test_a_decoder_crash_skips_that_file_only(src, tmp_path):
    # Execute
    cfg = ImportConfig(frames=4, clips_per_video=1, workers=2)
    result = import_videos(discover_folders(src), tmp_path / "ds", cfg, decoder=crashing_decoder)

    # Assert
    skipped = {s.path: s.reason for s in result.skipped}
    assert skipped["run/r2.webm"].startswith("the decoder crashed")
    assert len(skipped) == 3 and result.imported == 7


def test_without_pyav_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(FedtwinError, match=r"pip install 'fedtwin\[video\]'"):
        require_av()


def test_old_datasets_still_load(tmp_path):
    # The optional group column is additive: a dataset written without it reads as before.
    from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, make_moving_digits_dataset

    make_moving_digits_dataset(tmp_path / "md", MovingDigitsConfig(frames=2, train_per_class=1, test_per_class=1), 0)
    assert len(load_split(tmp_path / "md", "train")) == 10
    assert "group" not in pq.read_schema(load_dataset_manifest(tmp_path / "md").split_path("train")).names
