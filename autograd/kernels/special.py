"""The error functions, which NumPy lacks: numba vectorises `math.erf` (exact gelu needs it) and
`math.erfc` (normal tail probabilities without cancellation)."""

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


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erfc_kernel(x):
    return math.erfc(x)


_erfc_reference = np.vectorize(math.erfc, otypes=[np.float64])


def erfc_reference(x: np.ndarray) -> np.ndarray:
    """Plain reference: Python's math.erfc per element."""
    return _erfc_reference(x).astype(x.dtype, copy=False)


def erfc(x: np.ndarray) -> np.ndarray:
    """erfc(x) = 1 - erf(x) elementwise, in x's dtype, accurate where erf(x) is near 1."""
    if use_reference_kernels():
        return erfc_reference(x)
    return _erfc_kernel(x)
