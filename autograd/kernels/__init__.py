"""Compiled fast paths beneath the ops: numba on the CPU, CUDA C on the GPU (`kernels/cuda/`).

Each module registers its kernels in `registry` (keyed by op and device type, with what
each supports); an op looks its fast path up and otherwise runs its own math. Set the
environment variable `AUTOGRAD_REFERENCE_KERNELS=1` to run the whole engine on the ops' own
math instead (slow; for checking the kernels)."""

from __future__ import annotations

import os

# numba's parallel kernels run on an OpenMP pool whose threads, by default, spin after each
# kernel and starve the BLAS threads of the next matrix product: on 2 cores that made a
# UNet training step 1.5-2x slower (benchmarks/bench_unet.py). Passive waiting fixes it.
# It must be set before the pool starts (the first parallel kernel); a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Importing the kernel modules registers their fast paths; an op takes the first that
# supports its arguments, so Winograd (3x3 stride-1 convolutions) and the 1x1 products
# come before im2col.
from autograd.kernels import winograd, pointwise  # noqa: E402, I001
from autograd.kernels import activation, adam, conv, conv_gemm, matmul, norm, softmax, special  # noqa: E402, I001,E501
from autograd.kernels.registry import use_reference_kernels  # noqa: E402

__all__ = ["activation", "adam", "conv", "conv_gemm", "matmul", "norm", "pointwise", "softmax",
           "special", "use_reference_kernels", "winograd"]
