"""``fedtwin data import-videos`` and ``fedtwin data show`` end to end, and their one-line errors."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("av")

from fedtwin.orchestrator.cli.main import main  # noqa: E402
from tests.pipelines.data.video_fixtures import encode, synthetic_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def fedtwin(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedtwin.orchestrator.cli ARGV`` as a separate process."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for c, label in enumerate(("jump", "wave")):
        for k, suffix in enumerate(("mp4", "webm", "avi")):
            encode(root / label / f"v{k}.{suffix}", synthetic_frames(16, phase=7 * c + k))
    (root / "jump" / "garbage.mp4").write_bytes(b"\x00not a video" * 100)
    return root


def test_import_then_show(src, tmp_path):
    # Execute
    imported = fedtwin(
        "data",
        "import-videos",
        str(src),
        "ds",
        "--frames",
        "4",
        "--stride",
        "3",
        "--clips-per-video",
        "2",
        "--size",
        "24x24",
        "--channels",
        "3",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    shown = fedtwin("data", "show", "ds", "--per-class", "2", "--out", "sheet.png", cwd=tmp_path)

    # Assert: 6 good videos x 2 clips, split by video (the split is drawn before decoding, so the
    # garbage file may be one of the held-out videos)
    assert imported.returncode == 0, imported.stderr
    counts = re.search(
        r"wrote ds: train (\d+), test (\d+) clips of \[4, 3, 24, 24\] \(T, C, H, W\), 2 classes", imported.stdout
    )
    assert counts and int(counts[1]) + int(counts[2]) == 12 and int(counts[2]) % 2 == 0 and int(counts[2]) > 0
    assert "from 6 of 7 videos (1 skipped, 0 padded)" in imported.stdout
    assert "fedtwin: skipped jump/garbage.mp4: cannot open" in imported.stderr
    assert "import-videos: 7/7 videos, 12 clips, 1 skipped" in imported.stderr
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [s["path"] for s in manifest["info"]["skipped"]] == ["jump/garbage.mp4"]

    # 2 classes x 2 clips of 4 frames; 24 px frames are zoomed x3 to 72 px + 2 px gaps
    assert shown.returncode == 0, shown.stderr
    assert png_size(tmp_path / "sheet.png") == (140 + 4 * 74, 30 + 4 * 74 + 8)
    assert "4 clips of 2 classes" in shown.stdout


def _one_line_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    return err


def test_user_errors_are_one_line(src, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    index = tmp_path / "index.csv"
    index.write_text("file,label\na.mp4,x\n")
    cases = {
        (str(tmp_path / "missing"), "out"): "missing: no such folder",
        (str(tmp_path / "empty"), "out"): "empty: no class folders",
        (str(src), "out", "--size", "24x"): "--size: expected HxW",
        (str(src), "out", "--frames", "0"): "--frames: must be >= 1, got 0",
        (str(src), "out", "--test-fraction", "1"): r"--test-fraction: must be in [0, 1), got 1.0",
        ("out", "--index", str(index)): "index has no column 'path'",
        ("out",): "give SRC (a folder of class folders) or --index FILE",
    }
    for argv, message in cases.items():
        err = _one_line_error(capsys, ["data", "import-videos", *argv])
        assert err.startswith("fedtwin: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_pyav_names_the_extra(src, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    err = _one_line_error(capsys, ["data", "import-videos", str(src), str(tmp_path / "out")])
    assert "pip install 'fedtwin[video]'" in err


def test_show_errors(tmp_path, capsys):
    err = _one_line_error(capsys, ["data", "show", str(tmp_path)])
    assert "manifest.json: file not found" in err


def test_show_works_on_generated_data(tmp_path, capsys):
    # Every dataset, not only imported ones: moving digits (8 frames of 32 px, zoom x2)
    assert (
        main(
            [
                "data",
                "make",
                "moving-digits",
                str(tmp_path / "md"),
                "--train-per-class",
                "2",
                "--test-per-class",
                "1",
                "--frames",
                "3",
            ]
        )
        == 0
    )
    assert main(["data", "show", str(tmp_path / "md"), "--per-class", "1", "--split", "test"]) == 0
    width, height = png_size(tmp_path / "md" / "contact_sheet_test.png")
    assert (width, height) == (140 + 3 * 66, 30 + 10 * 66 + 9 * 8)
