"""Helpers of the device tests: is "cuda" the simulated CuPy, how close a device run must
come to the CPU's, and host copies of results."""

from __future__ import annotations

import fake_cupy
import numpy as np

import autograd
from autograd.backend import CPU, cuda_module, to_device

SIMULATOR_TOLERANCE = dict(rtol=1e-9, atol=1e-11)  # float64, NumPy underneath
GPU_TOLERANCE = dict(rtol=1e-7, atol=1e-9)  # float64: a GPU sums and multiplies in other orders


def simulated() -> bool:
    """Whether device "cuda" is the simulated CuPy (or there is no GPU at all)."""
    return not autograd.cuda.is_available() or cuda_module() is fake_cupy


def counts_transfers(device) -> bool:
    """Whether host transfers on `device` are counted: only the simulated CuPy counts them
    (a transfer assert elsewhere would check nothing)."""
    return (str(device).startswith("cuda") and autograd.cuda.is_available()
            and cuda_module() is fake_cupy)


def tolerance() -> dict:
    """How close a device run must come to the CPU's (float64)."""
    return SIMULATOR_TOLERANCE if simulated() else GPU_TOLERANCE


def host(value) -> np.ndarray:
    """A tensor's or an array's values on the host (from any device)."""
    return to_device(value.data if isinstance(value, autograd.Tensor) else value, CPU)
