"""Seeds derived from a run's seed and a path of integers: the one place randomness is keyed.

Every random stream of a run (a device's round, a server pass, a twin's epoch, a task's shuffling) is
``derive_seed(run_seed, *path)``, so results do not depend on which process or host ran the work and a
resumed run replays the same streams. Library code never seeds global generators.

:func:`sampling_rng` is the one stream keyed differently: the federated device sampling has always
used ``np.random.default_rng([seed, round_num])`` (a generator on the full seed sequence, not on a
32-bit derived seed), and keeping it keeps every run's device choices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(*path: int) -> int:
    """A 32-bit seed for the integer ``path`` (e.g. ``(seed, round_num, device_id)``)."""
    return int(np.random.SeedSequence([int(p) for p in path]).generate_state(1)[0])


def torch_generator(*path: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*path)`` (torch is imported only here)."""
    import torch

    return torch.Generator().manual_seed(derive_seed(*path))


def reseed(generator: torch.Generator, *path: int) -> torch.Generator:
    """Seed an existing CPU ``generator`` exactly as :func:`torch_generator` would seed a new one.

    The stream is identical to ``torch_generator(*path)``'s; a caller that needs one stream after
    another (a host training its devices) keeps one generator and saves building one per stream.
    """
    return generator.manual_seed(derive_seed(*path))


def numpy_rng(*path: int) -> np.random.Generator:
    """A numpy ``Generator`` seeded with ``derive_seed(*path)``."""
    return np.random.default_rng(derive_seed(*path))


def sampling_rng(seed: int, round_num: int) -> np.random.Generator:
    """The generator that samples a federated round's devices: ``default_rng([seed, round_num])``.

    Not ``numpy_rng(seed, round_num)``: that is a different stream, and runs must keep choosing the
    devices they always chose.
    """
    return np.random.default_rng([int(seed), int(round_num)])
