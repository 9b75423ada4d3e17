"""Helpers of the device tests: is "cuda" the simulated CuPy, how close a device run must
come to the CPU's, and host copies of results."""

from __future__ import annotations

import fake_cupy
import numpy as np

import autograd
from autograd.backend import CPU, cuda_module, device_of, to_device

# How close a float64 run on device "cuda" must come to the CPU's: the one definition of the
# device legs' tolerances (tests/op_testing.py's check_op and the device tests use these).
#
# SIMULATOR_TOLERANCE: the simulated CuPy runs the same NumPy code as the CPU, but the
# reference kernels where the CPU takes its numba fast paths (other summation orders), so the
# two differ by rounding alone, which is relative to the largest terms of a sum. check_op had
# rtol=1e-10 (one op) and the module / optimizer / op device tests 1e-9 (many ops, several
# steps); every one of them passes with 1e-10, so that is the value: the tighter one (~10^6
# ulp), far below what an indexing or gradient-routing bug gives. check_op adds rtol * (the
# largest entry) to atol (a gradient that cancels to 0 comes out as +-1e-12 on one device and
# exactly 0 on the other). The fast-path tests' float64 tolerance (tests/kernel_testing.py)
# is the same, for the same reason.
SIMULATOR_TOLERANCE = dict(rtol=1e-10, atol=1e-11)
# A real GPU also has its own libraries (cuBLAS, atomic scatter-adds, other libm): one op
# (check_op, the per-op device tests) within GPU_OP_TOLERANCE; a chain of them (a module's
# forward and backward, optimizer steps) within GPU_TOLERANCE.
GPU_OP_TOLERANCE = dict(rtol=1e-9, atol=1e-10)
GPU_TOLERANCE = dict(rtol=1e-7, atol=1e-9)


def simulated() -> bool:
    """Whether device "cuda" is the simulated CuPy (or there is no GPU at all)."""
    return not autograd.cuda.is_available() or cuda_module() is fake_cupy


def counts_transfers(device) -> bool:
    """Whether host transfers on `device` are counted: only the simulated CuPy counts them
    (a transfer assert elsewhere would check nothing)."""
    return (str(device).startswith("cuda") and autograd.cuda.is_available()
            and cuda_module() is fake_cupy)


def tolerance(one_op: bool = False) -> dict:
    """How close a device run must come to the CPU's (float64): that of one op, or of a
    chain of them (the default)."""
    if simulated():
        return SIMULATOR_TOLERANCE
    return GPU_OP_TOLERANCE if one_op else GPU_TOLERANCE


def host(value) -> np.ndarray:
    """A tensor's or an array's values on the host (from any device)."""
    return to_device(value.data if isinstance(value, autograd.Tensor) else value, CPU)


def cuda_host(array) -> np.ndarray:
    """A kernel's result, asserted to be on device "cuda", on the host."""
    assert device_of(array) == "cuda", f"a result on {device_of(array)}"
    return to_device(array, CPU)
