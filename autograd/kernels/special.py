"""The error function, which NumPy lacks: numba vectorises `math.erf` (exact gelu needs it)."""

from __future__ import annotations

import math

import numba
import numpy as np

from autograd.kernels import use_reference_kernels


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erf_kernel(x):
    return math.erf(x)


_erf_reference = np.vectorize(math.erf, otypes=[np.float64])


def erf_reference(x: np.ndarray) -> np.ndarray:
    """Plain reference: Python's math.erf per element."""
    return _erf_reference(x).astype(x.dtype, copy=False)


def erf(x: np.ndarray) -> np.ndarray:
    """erf(x) elementwise, in x's dtype."""
    if use_reference_kernels():
        return erf_reference(x)
    return _erf_kernel(x)
