"""Tests for fedtwin.pipelines.mutual.augment: seeded, batched twin-view augmentations."""

import pytest
import torch

from fedtwin.pipelines.mutual.augment import (
    AUGMENTATIONS,
    PhotometricAugment,
    TemporalCropAugment,
    build_augmentation,
)


def clips(batch: int = 3, frames: int = 6, size: int = 8) -> torch.Tensor:
    """Clips whose every pixel is distinct, so any index change shows up."""
    n = batch * frames * size * size
    return torch.arange(n, dtype=torch.float32).view(batch, frames, 1, size, size) / n


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_same_generator_seed_gives_same_output(name):
    # Prepare
    x = clips()
    aug = build_augmentation(name)

    # Execute
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))

    # Assert
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["temporal_crop", "photometric"])
def test_different_seeds_give_different_outputs_and_input_is_untouched(name):
    x = clips(batch=8)
    before = x.clone()
    aug = build_augmentation(name)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)
    torch.testing.assert_close(x, before)


def test_the_two_twin_views_differ():
    x = clips()
    view_a = build_augmentation("temporal_crop")(x, torch.Generator().manual_seed(0))
    view_b = build_augmentation("photometric")(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(view_a, view_b)
    assert not torch.allclose(view_a, x) and not torch.allclose(view_b, x)


@pytest.mark.parametrize("mode", ["hold", "wrap"])
def test_temporal_jitter_reads_start_plus_stride_frames(mode):
    # Prepare: no spatial shift, so each output frame must be a whole input frame
    x = clips(batch=6)
    t_len = x.shape[1]
    aug = TemporalCropAugment(max_stride=3, max_start_fraction=1.0, mode=mode, max_shift=0)

    # Execute
    out = aug(x, torch.Generator().manual_seed(3))

    # Assert: frame s is input frame start + stride*s, clamped ('hold') or modulo T ('wrap')
    for b in range(x.shape[0]):
        idx = [next(t for t in range(t_len) if torch.equal(out[b, s], x[b, t])) for s in range(t_len)]
        start = idx[0]
        candidates = [
            [
                min(start + stride * s, t_len - 1) if mode == "hold" else (start + stride * s) % t_len
                for s in range(t_len)
            ]
            for stride in (1, 2, 3)
        ]
        assert idx in candidates


def test_spatial_shift_is_a_zero_filled_translation():
    # Prepare: identity in time (stride 1, start 0), shift only
    x = clips(batch=5) + 1.0  # strictly positive, so the zero fill is recognisable
    aug = TemporalCropAugment(max_stride=1, max_start_fraction=0.0, max_shift=2)

    # Execute
    out = aug(x, torch.Generator().manual_seed(4))

    # Assert: each clip equals its input moved by one (dy, dx) in [-2, 2]^2, same for all frames
    h, w = x.shape[-2:]
    for b in range(x.shape[0]):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expected = torch.zeros_like(x[b])
                expected[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
                    b, ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
                ]
                if torch.equal(out[b], expected):
                    matches.append((dy, dx))
        assert len(matches) == 1


def test_photometric_without_jitter_or_noise_is_a_pure_flip():
    x = clips()
    aug = PhotometricAugment(brightness=0.0, contrast=0.0, flip_p=1.0, noise_std=0.0)
    torch.testing.assert_close(aug(x, torch.Generator().manual_seed(0)), x.flip(-1))


def test_photometric_contrast_and_brightness_by_hand():
    # Prepare: a clip of constant 0.5 except one pixel; contrast/brightness drawn per clip
    x = torch.full((1, 2, 1, 2, 2), 0.5)
    x[0, 0, 0, 0, 0] = 0.9  # clip mean = (0.9 + 7 * 0.5) / 8 = 0.55
    aug = PhotometricAugment(brightness=0.1, contrast=0.3, flip_p=0.0, noise_std=0.0)

    # Execute
    out = aug(x, torch.Generator().manual_seed(0))

    # Assert: out = (x - 0.55) * c + 0.55 + o; solve c, o from two pixels, check ranges and the rest
    c = (out[0, 0, 0, 0, 0] - out[0, 0, 0, 0, 1]) / 0.4
    o = out[0, 0, 0, 0, 1] - ((0.5 - 0.55) * c + 0.55)
    assert 0.7 <= c.item() <= 1.3 and -0.1 <= o.item() <= 0.1
    torch.testing.assert_close(out, (x - 0.55) * c + 0.55 + o)


def test_unknown_augmentation_lists_choices():
    with pytest.raises(ValueError, match="choose one of"):
        build_augmentation("mixup")
