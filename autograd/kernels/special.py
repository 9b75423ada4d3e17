"""The error functions, which NumPy lacks: numba vectorises `math.erf` (exact gelu needs it) and
`math.erfc` (normal tail probabilities without cancellation); on the GPU, CUDA's own erf and
erfc (`cuda/special.cu`).

The references are Python's math.erf / math.erfc per element, on the host: for a CuPy array
the reference copies it to the host and back (it is only a reference; the GPU runs the CUDA
kernels, and only the simulated CuPy of the tests, which cannot compile them, runs it)."""

from __future__ import annotations

import math

import numba
import numpy as np

from autograd.backend import CPU, device_of, to_device
from autograd.kernels import elementwise


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erf_kernel(x):
    return math.erf(x)


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erfc_kernel(x):
    return math.erfc(x)


_erf_host = np.vectorize(math.erf, otypes=[np.float64])
_erfc_host = np.vectorize(math.erfc, otypes=[np.float64])


def _per_element_on_host(function, x):
    """function(x) in x's dtype, computed on the host, returned to x's device."""
    return to_device(function(to_device(x, CPU)).astype(x.dtype, copy=False), device_of(x))


def erf_reference(x):
    """Plain reference: Python's math.erf per element."""
    return _per_element_on_host(_erf_host, x)


def erfc_reference(x):
    """Plain reference: Python's math.erfc per element."""
    return _per_element_on_host(_erfc_host, x)


def erf(x):
    """erf(x) elementwise, in x's dtype."""
    return elementwise(_erf_kernel, ("special.cu", "erf_forward"), erf_reference, x)


def erfc(x):
    """erfc(x) = 1 - erf(x) elementwise, in x's dtype, accurate where erf(x) is near 1."""
    return elementwise(_erfc_kernel, ("special.cu", "erfc_forward"), erfc_reference, x)
