"""The actor processes' torch set-up: the allocator keeps freed tensor memory for the next step."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Train a small conv model for 30 steps after 10 warm-up steps and print the minor page faults per step.
_STEPS = textwrap.dedent(
    """
    import resource, sys
    import torch
    from fedtwin.actors.torch_runtime import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(16, 32, 3,
                                padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(),
                                torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(8, 1, 8, 32, 32), torch.randint(0, 10, (8,))  # activations of 2-4 MB per layer
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(10):  # the heap grows to the steps' high-water mark
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 30)
    """
)


def _faults_per_step(*modes: str) -> list[float]:
    """Run one single-threaded process per mode, side by side (page faults are counted per process)."""
    procs = [subprocess.Popen([sys.executable, "-c", _STEPS, m], stdout=subprocess.PIPE, text=True) for m in modes]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs)
    return [float(out.strip().splitlines()[-1]) for out in outs]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_steps_reuse_freed_memory_instead_of_faulting_pages_back_in():
    # Execute: the same steps with glibc's default thresholds and with the actors' set-up
    default, kept = _faults_per_step("default", "keep")
    # Assert: each step's activations (a few MB) come back without page faults once memory is kept
    # (a single heap extension of 16 MB during the 30 steps would be ~140 per step; default: thousands)
    assert kept < 500, f"{kept} page faults per step with keep_freed_memory"
    assert default > 5 * max(kept, 100.0), f"default {default} vs kept {kept}: the test no longer shows the effect"
