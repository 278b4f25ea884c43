"""Torch set-up inside an actor process: its thread count, its allocator and the device it trains on."""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap (and are reused); glibc's largest allowed value on 64-bit.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory at the top of the heap kept for reuse instead of being given back to the kernel.
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024


def torch_device(prefer_gpu: bool = True) -> str:
    """``cuda`` when this process can see a GPU (Ray sets CUDA_VISIBLE_DEVICES per actor), else ``cpu``."""
    import torch

    return "cuda" if prefer_gpu and torch.cuda.is_available() else "cpu"


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory torch frees for the next step instead of unmapping it.

    By default glibc serves large blocks (a batch's activations, from a few hundred KB) with ``mmap``
    and gives them back on ``free``, or trims the heap's free top back to the kernel; the next step then
    takes a page fault for every 4 KB page it touches again (tens of thousands per second on a small
    model: kernel time and cold caches on every step). With fixed thresholds (which also turn off
    glibc's own adaptation) blocks under 32 MB come from the heap and up to 512 MB of freed memory stays
    mapped, so a process's resident memory stays at its training high-water mark. Returns False where
    this does not apply (not Linux/glibc); the process then runs with the default allocator.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another libc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not ok:
        logger.debug("mallopt refused the thresholds; keeping glibc's defaults")
    return ok


def prepare_torch(threads: int) -> None:
    """Set this process's torch threads and allocator, and pay torch's one-off optimizer import now.

    The first optimizer a process builds imports ``torch._dynamo`` (1.5 s idle, up to 6 s on a busy
    2-core machine). Doing it while actors start up overlaps it with Ray start-up instead of charging it
    to the first round. The allocator: :func:`keep_freed_memory`.
    """
    import torch

    keep_freed_memory()
    torch.set_num_threads(threads)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
