"""`autograd.cuda`: is a GPU usable, how many, and waiting for it (as `torch.cuda`)."""

from __future__ import annotations

from autograd.backend import cuda_device_count, cuda_is_available, cuda_module


def is_available() -> bool:
    """Whether device "cuda" can be used: CuPy is installed and sees a GPU."""
    return cuda_is_available()


def device_count() -> int:
    return cuda_device_count()


def synchronize() -> None:
    """Wait until the current GPU has finished all queued work (for timing)."""
    cuda_module().cuda.Device().synchronize()
