"""Twin views: two different, seeded clip augmentations.

The twins must see different views of the same clips so that their errors decorrelate:

- ``TemporalCropAugment`` (view A): temporal jitter (random start and stride, wrapping around the clip
  or holding the last frame) plus a random crop-and-pad shift, the same for every frame of a clip.
- ``PhotometricAugment`` (view B): brightness/contrast jitter, horizontal flip and Gaussian noise.

All operate batched on float tensors ``(B, T, C, H, W)``, draw every random number from the
``torch.Generator`` they are given (so a fixed generator state gives the same output), and return a
new tensor. Random parameters are drawn on the generator's device and moved to the data's device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check_clips(x: torch.Tensor, name: str) -> None:
    if x.ndim != 5 or not x.dtype.is_floating_point:
        raise ValueError(f"{name}: expected float clips shaped (B, T, C, H, W), got {x.dtype} {tuple(x.shape)}")


def _uniform(generator: torch.Generator, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(device)


def _randint(generator: torch.Generator, n: int, low: int, high: int, device: torch.device) -> torch.Tensor:
    """Integers in ``[low, high]`` inclusive."""
    return torch.randint(low, high + 1, (n,), generator=generator, device=generator.device).to(device)


class TemporalCropAugment:
    """View A: temporal jitter plus a random spatial shift with fill (crop-and-pad).

    Args:
        max_stride: frame stride is drawn from ``1..max_stride`` per clip.
        max_start_fraction: the first frame is drawn from ``0..floor(fraction * (T - 1))``.
        mode: ``"wrap"`` (frame index modulo T) or ``"hold"`` (repeat the last frame).
        max_shift: spatial shift in pixels drawn from ``-max_shift..max_shift`` per axis.
        fill: value of the pixels shifted in from outside the frame.
    """

    def __init__(
        self,
        max_stride: int = 2,
        max_start_fraction: float = 0.5,
        mode: str = "wrap",
        max_shift: int = 3,
        fill: float = 0.0,
    ) -> None:
        if mode not in ("wrap", "hold"):
            raise ValueError(f"TemporalCropAugment: mode={mode!r} must be 'wrap' or 'hold'")
        if max_stride < 1 or max_shift < 0 or not 0.0 <= max_start_fraction <= 1.0:
            raise ValueError(
                f"TemporalCropAugment: max_stride={max_stride} must be >= 1, max_shift={max_shift} "
                f">= 0 and max_start_fraction={max_start_fraction} in [0, 1]"
            )
        self.max_stride = max_stride
        self.max_start_fraction = max_start_fraction
        self.mode = mode
        self.max_shift = max_shift
        self.fill = fill

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_clips(x, "TemporalCropAugment")
        b, t, c, h, w = x.shape
        dev = x.device
        start = _randint(generator, b, 0, int(self.max_start_fraction * (t - 1)), dev)
        stride = _randint(generator, b, 1, self.max_stride, dev)
        frames = start[:, None] + stride[:, None] * torch.arange(t, device=dev)[None, :]
        frames = frames % t if self.mode == "wrap" else frames.clamp_max(t - 1)
        out = x[torch.arange(b, device=dev)[:, None], frames]
        if self.max_shift == 0:
            return out
        m = self.max_shift
        dy = _randint(generator, b, -m, m, dev)
        dx = _randint(generator, b, -m, m, dev)
        padded = F.pad(out.reshape(b, t * c, h, w), (m, m, m, m), value=self.fill).view(b, t, c, h + 2 * m, w + 2 * m)
        # Output pixel (i, j) reads padded pixel (i + m - dy, j + m - dx): content moves by (+dy, +dx).
        rows = (torch.arange(h, device=dev)[None, :] + m - dy[:, None]).view(b, 1, 1, h, 1)
        padded = padded.gather(3, rows.expand(b, t, c, h, w + 2 * m))
        cols = (torch.arange(w, device=dev)[None, :] + m - dx[:, None]).view(b, 1, 1, 1, w)
        return padded.gather(4, cols.expand(b, t, c, h, w))


class PhotometricAugment:
    """View B: per-clip contrast and brightness jitter, horizontal flip, Gaussian noise.

    Args:
        brightness: additive offset drawn from ``[-brightness, brightness]`` (input units).
        contrast: factor drawn from ``[1 - contrast, 1 + contrast]``, applied around the clip mean.
        flip_p: probability of mirroring a clip left-right (note: mirrored digits are not digits; set
            0 when handedness carries the class).
        noise_std: standard deviation of the additive per-pixel Gaussian noise.
    """

    def __init__(
        self, brightness: float = 0.2, contrast: float = 0.2, flip_p: float = 0.5, noise_std: float = 0.05
    ) -> None:
        if brightness < 0 or not 0 <= contrast < 1 or not 0 <= flip_p <= 1 or noise_std < 0:
            raise ValueError(
                f"PhotometricAugment: need brightness={brightness} >= 0, contrast={contrast} in "
                f"[0, 1), flip_p={flip_p} in [0, 1], noise_std={noise_std} >= 0"
            )
        self.brightness = brightness
        self.contrast = contrast
        self.flip_p = flip_p
        self.noise_std = noise_std

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_clips(x, "PhotometricAugment")
        b = x.shape[0]
        dev = x.device
        shape = (b, 1, 1, 1, 1)
        factor = _uniform(generator, b, 1.0 - self.contrast, 1.0 + self.contrast, dev).to(x.dtype).view(shape)
        offset = _uniform(generator, b, -self.brightness, self.brightness, dev).to(x.dtype).view(shape)
        mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
        out = (x - mean) * factor + mean + offset
        flip = (_uniform(generator, b, 0.0, 1.0, dev) < self.flip_p).view(shape)
        out = torch.where(flip, out.flip(-1), out)
        if self.noise_std > 0:
            noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
            out = out + self.noise_std * noise.to(dev)
        return out


class IdentityAugment:
    """No augmentation (a copy of the input), for ablations and evaluation."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_clips(x, "IdentityAugment")
        return x.clone()


AUGMENTATIONS: dict[str, type] = {
    "temporal_crop": TemporalCropAugment,
    "photometric": PhotometricAugment,
    "none": IdentityAugment,
}


def build_augmentation(name: str, **params: float | int | str) -> Augmentation:
    """Instantiate a registered augmentation by config name, e.g. ``build_augmentation("photometric")``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {sorted(AUGMENTATIONS)}")
    return AUGMENTATIONS[name](**params)
