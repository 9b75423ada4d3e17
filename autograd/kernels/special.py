"""The error functions, which NumPy lacks: numba vectorises `math.erf` (exact gelu needs it) and
`math.erfc` (normal tail probabilities without cancellation); on the GPU, CUDA's own erf and
erfc (`cuda/special.cu`): the fast paths of the ops Erf and Erfc (`autograd/ops/elementwise.py`)."""

from __future__ import annotations

import math

import numba

from autograd.kernels.cuda import launch_elementwise
from autograd.kernels.registry import register


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erf_kernel(x):
    return math.erf(x)


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erfc_kernel(x):
    return math.erfc(x)


register("erf", "cpu")(_erf_kernel)
register("erfc", "cpu")(_erfc_kernel)


@register("erf", "cuda")
def _erf_cuda(x):
    return launch_elementwise("special.cu", "erf_forward", x)


@register("erfc", "cuda")
def _erfc_cuda(x):
    return launch_elementwise("special.cu", "erfc_forward", x)
