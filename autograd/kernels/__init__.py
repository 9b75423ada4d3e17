"""Compiled kernels: numba on the CPU, CUDA C on the GPU (`kernels/cuda/`), each beside a
reference implementation written once against the array module (NumPy or CuPy).

Set the environment variable `AUTOGRAD_REFERENCE_KERNELS=1` to run the whole engine on the
references instead (slow; for checking the kernels)."""

from __future__ import annotations

import os

import numpy as np

from autograd.backend import get_array_module
from autograd.observers import observed_kernel, observers

# numba's parallel kernels run on an OpenMP pool whose threads, by default, spin after each
# kernel and starve the BLAS threads of the next matrix product: on 2 cores that made a
# UNet training step 1.5-2x slower (benchmarks/bench_unet.py). Passive waiting fixes it.
# It must be set before the pool starts (the first parallel kernel); a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def use_reference_kernels() -> bool:
    return os.environ.get("AUTOGRAD_REFERENCE_KERNELS", "0") not in ("", "0", "false")


def kernel_backend(array) -> str:
    """Which implementation a kernel runs for `array`: "numba" (a NumPy array), "cuda" (a
    CuPy array), or "reference" (AUTOGRAD_REFERENCE_KERNELS=1, or a CuPy stand-in that
    cannot compile kernels, as the tests' simulated device)."""
    if use_reference_kernels():
        backend = "reference"
    elif get_array_module(array) is np:
        backend = "numba"
    else:
        backend = "cuda" if hasattr(get_array_module(array), "RawModule") else "reference"
    if observers:  # the profiler notes which implementation ran
        observed_kernel(backend)
    return backend


def elementwise(numba_kernel, cuda_kernel: tuple[str, str], reference, *arrays):
    """An element-wise kernel on arrays of one dtype (broadcasting): `numba_kernel(*arrays)`
    for NumPy arrays, the CUDA kernel (source file, name) for CuPy arrays, else
    `reference(*arrays)` (see kernel_backend)."""
    backend = kernel_backend(arrays[0])
    if backend == "numba":
        with np.errstate(over="ignore"):  # exp(-x) = inf: the limit the activations want
            return numba_kernel(*arrays)
    if backend == "cuda":
        from autograd.kernels.cuda import launch_elementwise

        return launch_elementwise(*cuda_kernel, *arrays)
    return reference(*arrays)
