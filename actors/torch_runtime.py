"""Torch set-up inside an actor process: its thread count and the device it trains on."""

from __future__ import annotations


def torch_device(prefer_gpu: bool = True) -> str:
    """``cuda`` when this process can see a GPU (Ray sets CUDA_VISIBLE_DEVICES per actor), else ``cpu``."""
    import torch

    return "cuda" if prefer_gpu and torch.cuda.is_available() else "cpu"


def prepare_torch(threads: int) -> None:
    """Set this process's torch threads and pay torch's one-off optimizer import now.

    The first optimizer a process builds imports ``torch._dynamo`` (1.5 s idle, up to 6 s on a busy
    2-core machine). Doing it while actors start up overlaps it with Ray start-up instead of charging it
    to the first round.
    """
    import torch

    torch.set_num_threads(threads)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
