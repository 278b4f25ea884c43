"""Moving-digits video clips generated from scikit-learn's bundled 8x8 digits (no download).

Each clip shows one handwritten digit, upscaled to ``digit_size`` pixels, moving along a straight
path that bounces off the canvas borders, plus a little Gaussian noise. Train and test clips are cut
from disjoint source images (a seeded, stratified split of the 1,797 digits), so test accuracy
measures generalisation to unseen handwriting rather than to unseen paths.

Randomness is split into independent streams derived from ``(seed, split)``: the source-image split,
the clips (digits, paths, noise) and the domain shift. The same seed and split with and without a
shift therefore give the same clips, differing only by the shift.

Two label schemes: ``digit`` (the label is the digit; motion is random or, with ``class_motion``, tied
to the digit) and ``digit_motion``, where the label is (digit group, direction of travel) with the
direction drawn independently of the digit. Opposite directions along one axis visit the same set of
positions, so in ``digit_motion`` a model that ignores frame order cannot tell them apart.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.clips import ClipArrays

if TYPE_CHECKING:  # the manifest and Parquet modules (pyarrow) load when a dataset is written or read
    from fedtwin.pipelines.data.manifest import DatasetManifest

log = logging.getLogger(__name__)

NUM_DIGIT_CLASSES = 10
SPLITS = ("train", "test")
LABEL_SCHEMES = ("digit", "digit_motion")
_SPLIT_STREAM = {"train": 1, "test": 2}
_CHUNK = 1024  # clips rendered at once: bounds the float32 canvas to ~35 MB at 8x32x32


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: must be > 0, got {value}")


@dataclass(frozen=True)
class ShiftConfig:
    """A "shifted domain": the same clips seen through a blurrier, flatter, noisier camera."""

    blur_sigma: float = 1.0  # Gaussian blur of each frame, in pixels (0 = none)
    contrast: float = 0.5  # 1 = unchanged; pixels are pulled towards mid-grey 0.5
    noise_std: float = 0.1  # extra Gaussian noise, in [0, 1] pixel units

    def __post_init__(self) -> None:
        if self.blur_sigma < 0:
            raise ValueError(f"blur_sigma: must be >= 0, got {self.blur_sigma}")
        if not 0 < self.contrast <= 1:
            raise ValueError(f"contrast: must be in (0, 1], got {self.contrast}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std: must be >= 0, got {self.noise_std}")


@dataclass(frozen=True)
class MovingDigitsConfig:
    """How moving-digit clips look. The seed is passed separately (see :func:`generate`).

    ``class_motion`` makes the direction of travel a function of the class (class c heads at angle
    2*pi*c/10, with a little jitter, at the middle speed), so motion carries label information.

    ``label_scheme="digit_motion"`` makes the class ``group * motion_classes + code``: digits are cut
    into ``digit_groups`` contiguous groups (group of digit d = ``d * digit_groups // 10``) and every clip
    draws a direction code independently of its digit, heading at ``2*pi*code/motion_classes`` (plus the
    jitter) at the middle speed. Its start is drawn so that the straight path stays inside the canvas
    (when it fits), so the direction holds in every frame instead of flipping at a wall.
    """

    frames: int = 8
    size: int = 32
    channels: int = 1
    digit_size: int = 16  # the 8x8 digit is bilinearly upscaled to digit_size x digit_size
    speed: tuple[float, float] = (1.0, 3.0)  # pixels per frame, drawn uniformly
    noise_std: float = 0.05  # Gaussian pixel noise, in [0, 1] units
    train_per_class: int = 600
    test_per_class: int = 100
    test_fraction: float = 0.3  # share of source digit images reserved for test clips
    class_motion: bool = False
    direction_jitter_deg: float = 10.0  # only with class_motion or label_scheme digit_motion
    shift: ShiftConfig | None = None
    label_scheme: Literal["digit", "digit_motion"] = "digit"
    digit_groups: int = 5  # only with digit_motion
    motion_classes: int = 2  # directions per digit group, only with digit_motion (2 = right/left)

    def __post_init__(self) -> None:
        for name in ("frames", "size", "channels", "digit_size", "train_per_class", "test_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.digit_size > self.size:
            raise ValueError(f"digit_size: must be <= size ({self.size}), got {self.digit_size}")
        if len(self.speed) != 2 or not 0 <= self.speed[0] <= self.speed[1]:
            raise ValueError(f"speed: must be [low, high] with 0 <= low <= high, got {list(self.speed)}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std: must be >= 0, got {self.noise_std}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction: must be in (0, 1), got {self.test_fraction}")
        if self.direction_jitter_deg < 0:
            raise ValueError(f"direction_jitter_deg: must be >= 0, got {self.direction_jitter_deg}")
        if self.label_scheme not in LABEL_SCHEMES:
            raise ValueError(f"label_scheme: must be one of {', '.join(LABEL_SCHEMES)}, got {self.label_scheme!r}")
        if not 1 <= self.digit_groups <= NUM_DIGIT_CLASSES:
            raise ValueError(f"digit_groups: must be in [1, {NUM_DIGIT_CLASSES}], got {self.digit_groups}")
        if self.motion_classes < 2:
            raise ValueError(f"motion_classes: must be >= 2, got {self.motion_classes}")
        if self.class_motion and self.label_scheme == "digit_motion":
            raise ValueError(
                "class_motion: must be false with label_scheme 'digit_motion' (it draws directions per clip)"
            )

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(T, C, H, W) of the generated clips."""
        return (self.frames, self.channels, self.size, self.size)

    @property
    def num_classes(self) -> int:
        """Number of labels: 10 digits, or digit groups x directions."""
        if self.label_scheme == "digit_motion":
            return self.digit_groups * self.motion_classes
        return NUM_DIGIT_CLASSES

    def per_class(self, split: str) -> int:
        """Clips per class in ``split``."""
        return self.train_per_class if split == "train" else self.test_per_class


def digit_group_of(cfg: MovingDigitsConfig) -> np.ndarray:
    """``(10,)`` digit group of every digit under ``digit_motion`` (contiguous groups)."""
    return np.arange(NUM_DIGIT_CLASSES) * cfg.digit_groups // NUM_DIGIT_CLASSES


def class_names(cfg: MovingDigitsConfig) -> list[str]:
    """Names of the classes, index = label; ``digit_motion`` names read ``"01@180deg"`` (digits, heading)."""
    if cfg.label_scheme == "digit":
        return [str(d) for d in range(NUM_DIGIT_CLASSES)]
    groups = digit_group_of(cfg)
    names = []
    for g in range(cfg.digit_groups):
        digits = "".join(str(d) for d in np.flatnonzero(groups == g))
        names += [f"{digits}@{round(360 * m / cfg.motion_classes)}deg" for m in range(cfg.motion_classes)]
    return names


@functools.lru_cache(maxsize=4)
def digit_sprites(digit_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 sklearn digits as read-only float32 sprites in [0, 1], shape (1797, S, S), and labels."""
    from scipy import ndimage  # imported on use: loading a spec reads this module's configs only
    from sklearn.datasets import load_digits  # bundled with scikit-learn; imported lazily (slow import)

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    zoom = digit_size / images.shape[1]
    sprites = ndimage.zoom(images, (1.0, zoom, zoom), order=1, grid_mode=True, mode="nearest")
    sprites = np.clip(sprites, 0.0, 1.0).astype(np.float32)
    sprites.setflags(write=False)
    return sprites, digits.target.astype(np.int64)


def source_split(seed: int, test_fraction: float, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Seeded stratified split of source image indices into disjoint ``train`` and ``test`` pools."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    pools: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        pools["test"].append(idx[:n_test])
        pools["train"].append(idx[n_test:])
    return {k: np.sort(np.concatenate(v)) for k, v in pools.items()}


def _cycle_choice(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``n`` items of ``pool`` using every item once per pass, in random order."""
    reps = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:n]


def _bounce(pos: np.ndarray, limit: float) -> np.ndarray:
    """Reflect unbounded positions into [0, limit] (a triangle wave: straight path, elastic walls)."""
    if limit == 0:
        return np.zeros_like(pos)
    m = np.mod(pos, 2 * limit)
    reflected: np.ndarray = limit - np.abs(m - limit)
    return reflected


def _velocities(
    rng: np.random.Generator, n: int, cfg: MovingDigitsConfig, motion_codes: np.ndarray | None, num_codes: int
) -> np.ndarray:
    """(n, 2) velocity (dy, dx) in pixels/frame; random directions, or one direction per motion code."""
    if motion_codes is None:
        angle = rng.uniform(0.0, 2 * np.pi, n)
        speed = rng.uniform(cfg.speed[0], cfg.speed[1], n)
    else:
        jitter = np.deg2rad(cfg.direction_jitter_deg)
        angle = 2 * np.pi * motion_codes / num_codes + rng.uniform(-jitter, jitter, n)
        speed = np.full(n, (cfg.speed[0] + cfg.speed[1]) / 2)
    return np.stack([np.sin(angle) * speed, np.cos(angle) * speed], axis=1)


def _render(sprites: np.ndarray, top: np.ndarray, left: np.ndarray, size: int) -> np.ndarray:
    """Paste sprite i at integer (top[i, t], left[i, t]) on each of T empty frames -> (n, T, H, W)."""
    n, frames = top.shape
    s = sprites.shape[-1]
    canvas = np.zeros((n, frames, size, size), dtype=np.float32)
    ar = np.arange(s)
    rows = (top[:, :, None] + ar)[:, :, :, None]  # (n, T, s, 1)
    cols = (left[:, :, None] + ar)[:, :, None, :]  # (n, T, 1, s)
    canvas[np.arange(n)[:, None, None, None], np.arange(frames)[None, :, None, None], rows, cols] = sprites[:, None]
    return canvas


def _apply_shift(frames: np.ndarray, shift: ShiftConfig, rng: np.random.Generator) -> np.ndarray:
    if shift.blur_sigma > 0:
        from scipy import ndimage

        frames = ndimage.gaussian_filter(frames, sigma=(0, 0, shift.blur_sigma, shift.blur_sigma), mode="constant")
    frames = 0.5 + shift.contrast * (frames - 0.5)
    if shift.noise_std > 0:
        frames = frames + rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(shift.noise_std)
    return frames


def _straight_starts(rng: np.random.Generator, velocity: np.ndarray, limit: float, frames: int) -> np.ndarray:
    """(n, 2) starts, uniform over those whose straight path stays in [0, limit]; anywhere if none does."""
    travel = velocity * (frames - 1)
    lo = np.maximum(0.0, -travel)
    hi = np.minimum(limit, limit - travel)
    too_long = lo > hi  # the path is longer than the canvas: start anywhere and let it bounce
    lo, hi = np.where(too_long, 0.0, lo), np.where(too_long, limit, hi)
    return lo + rng.uniform(0.0, 1.0, velocity.shape) * (hi - lo)


def _digit_motion_sources(
    rng: np.random.Generator, cfg: MovingDigitsConfig, pool: np.ndarray, digit_labels: np.ndarray, per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """Source images and direction codes: ``per_class`` clips of every (group, code), codes independent of digits."""
    group_of_digit = digit_group_of(cfg)
    m = cfg.motion_classes
    sources, codes = [], []
    for g in range(cfg.digit_groups):
        group_pool = pool[group_of_digit[digit_labels[pool]] == g]
        sources.append(_cycle_choice(rng, group_pool, per_class * m))
        codes.append(rng.permutation(np.repeat(np.arange(m), per_class)))
    return np.concatenate(sources), np.concatenate(codes)


@dataclass(frozen=True, eq=False)
class ClipPlan:
    """What each clip of a split shows, before rendering: useful to check the generator itself."""

    source: np.ndarray  # (n,) index of the sklearn digit image used by each clip
    labels: np.ndarray  # (n,) int64 class of each clip
    velocity: np.ndarray  # (n, 2) (dy, dx) in pixels per frame, before bounces
    path: np.ndarray  # (n, T, 2) integer (top, left) of the digit in every frame
    motion_codes: np.ndarray | None = None  # (n,) direction code of each clip, digit_motion only


def plan_clips(cfg: MovingDigitsConfig, split: str, seed: int) -> ClipPlan:
    """Choose source digits and paths for one split (stream ``[seed, split, 0]``)."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
    _, digit_labels = digit_sprites(cfg.digit_size)
    pool = source_split(seed, cfg.test_fraction, digit_labels)[split]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], 0]))
    per_class = cfg.per_class(split)
    if cfg.label_scheme == "digit_motion":
        return _plan_digit_motion(cfg, rng, pool, digit_labels, per_class)
    source = np.concatenate(
        [_cycle_choice(rng, pool[digit_labels[pool] == c], per_class) for c in range(NUM_DIGIT_CLASSES)]
    )
    source = source[rng.permutation(len(source))]
    labels = digit_labels[source]
    n = len(source)
    limit = cfg.size - cfg.digit_size
    start = rng.uniform(0.0, limit, (n, 2))
    velocity = _velocities(rng, n, cfg, labels if cfg.class_motion else None, NUM_DIGIT_CLASSES)
    t = np.arange(cfg.frames, dtype=np.float64)
    path = _bounce(start[:, None, :] + velocity[:, None, :] * t[None, :, None], limit)
    return ClipPlan(source, labels, velocity, np.rint(path).astype(np.int64))


def _plan_digit_motion(
    cfg: MovingDigitsConfig, rng: np.random.Generator, pool: np.ndarray, digit_labels: np.ndarray, per_class: int
) -> ClipPlan:
    source, codes = _digit_motion_sources(rng, cfg, pool, digit_labels, per_class)
    order = rng.permutation(len(source))
    source, codes = source[order], codes[order]
    labels = digit_group_of(cfg)[digit_labels[source]] * cfg.motion_classes + codes
    velocity = _velocities(rng, len(source), cfg, codes, cfg.motion_classes)
    limit = cfg.size - cfg.digit_size
    start = _straight_starts(rng, velocity, limit, cfg.frames)
    t = np.arange(cfg.frames, dtype=np.float64)
    path = _bounce(start[:, None, :] + velocity[:, None, :] * t[None, :, None], limit)
    return ClipPlan(source, labels.astype(np.int64), velocity, np.rint(path).astype(np.int64), codes)


def generate(cfg: MovingDigitsConfig, split: str, seed: int) -> ClipArrays:
    """Generate one split of moving-digit clips, deterministically from ``seed``.

    Args:
        cfg: appearance, motion, sizes and optional domain shift.
        split: ``"train"`` or ``"test"``; picks the (disjoint) pool of source digit images.
        seed: the dataset seed; the same seed gives identical clips.

    Returns:
        ``cfg.per_class(split) * cfg.num_classes`` clips in random class order, ids ``"<split>-000000"``...
    """
    plan = plan_clips(cfg, split, seed)
    sprites, _ = digit_sprites(cfg.digit_size)
    noise_rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], 1]))
    shift_rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], 2]))
    n = len(plan.labels)
    out = np.empty((n, cfg.frames, cfg.channels, cfg.size, cfg.size), dtype=np.uint8)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        frames = _render(sprites[plan.source[lo:hi]], plan.path[lo:hi, :, 0], plan.path[lo:hi, :, 1], cfg.size)
        if cfg.noise_std > 0:
            frames += noise_rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(cfg.noise_std)
        if cfg.shift is not None:
            frames = _apply_shift(frames, cfg.shift, shift_rng)
        pixels = np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
        out[lo:hi] = pixels[:, :, None, :, :]  # channels > 1 repeat the grey frame
    video_ids = np.asarray([f"{split}-{i:06d}" for i in range(n)], dtype=str)
    return ClipArrays(out, plan.labels, video_ids)


def generator_info(cfg: MovingDigitsConfig, seed: int) -> dict[str, object]:
    """What the manifest records about how a dataset was generated (used to recognise reuse)."""
    return {"name": "moving-digits", "seed": seed, "config": dataclasses.asdict(cfg)}


def make_moving_digits_dataset(
    out_dir: str | Path, cfg: MovingDigitsConfig, seed: int, *, overwrite: bool = False
) -> DatasetManifest:
    """Generate the train and test splits and write them as a dataset directory (atomically).

    If ``out_dir`` already holds a moving-digits dataset generated with the same config and seed, it is
    reused as is; this makes "generate on first use" safe when several runs race for the same folder.

    Raises:
        DatasetError: ``out_dir`` holds something else (and ``overwrite`` is False).
    """
    from fedtwin.pipelines.data.dataset_io import write_dataset
    from fedtwin.pipelines.data.manifest import MANIFEST_NAME

    out = Path(out_dir)
    wanted = generator_info(cfg, seed)
    if not overwrite and (out / MANIFEST_NAME).is_file():
        return _reusable(out, wanted)
    splits = {split: generate(cfg, split, seed) for split in SPLITS}
    info = {"class_names": class_names(cfg), "generator": wanted}
    try:
        return write_dataset(out, splits, info, overwrite=overwrite)
    except DatasetError:
        # Another process may have written the same dataset while we generated ours.
        if overwrite or not (out / MANIFEST_NAME).is_file():
            raise
        return _reusable(out, wanted)


def _reusable(out: Path, wanted: dict[str, object]) -> DatasetManifest:
    from fedtwin.pipelines.data.manifest import load_dataset_manifest

    manifest = load_dataset_manifest(out)
    # JSON turns tuples into lists; compare in JSON form.
    if json.loads(json.dumps(wanted)) == manifest.info.get("generator"):
        log.info("reusing moving-digits dataset %s", out)
        return manifest
    raise DatasetError(
        f"{out}: holds a dataset generated with other settings than requested; "
        "choose another directory or pass --overwrite"
    )
