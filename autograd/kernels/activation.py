"""Sigmoid and SiLU as compiled ufuncs: one pass over memory instead of NumPy's three or
four temporaries (SiLU runs on every UNet activation); on the GPU, the element-wise kernels
of `cuda/activation.cu`. Both are registered as fast paths of the ops Sigmoid and SiLU
(`autograd/ops/elementwise.py`, which hold the math).

1 / (1 + exp(-x)) is accurate for every x: for very negative x, exp(-x) overflows to inf
and the result is 0 (SiLU gives -0.0), which is the limit; nothing is NaN.

`sigmoid_into` is the vectorisable sigmoid the fused kernels (GroupNorm + SiLU) call on
contiguous blocks: libm's exp is a scalar call that LLVM cannot vectorise and took most
of the fused kernel's time, so float32 uses an exp LLVM can (measured 3.8x on 1.6M values).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from autograd.kernels.cuda import launch_elementwise
from autograd.kernels.jit import cpu_kernel
from autograd.kernels.registry import register

_UNARY = ["float32(float32)", "float64(float64)"]
_BINARY = ["float32(float32, float32)", "float64(float64, float64)"]


@numba.vectorize(_UNARY, cache=True)
def _sigmoid_kernel(x):
    return 1.0 / (1.0 + math.exp(-x))


@numba.vectorize(_UNARY, cache=True)
def _silu_kernel(x):
    return x / (1.0 + math.exp(-x))


@numba.vectorize(_BINARY, cache=True)
def _silu_backward_kernel(x, grad):
    s = 1.0 / (1.0 + math.exp(-x))
    return grad * s * (1.0 + x * (1.0 - s))  # d silu = s (1 + x (1 - s))


# exp(-a), a >= 0, in float32: a = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite: ln2 split so
# n * LN2_HI is exact), exp(-r) by its degree-7 Taylor polynomial (error < 1e-8), 2^-n built
# from its exponent bits. Past a = 87 (exp(-87) = 1.6e-38, the end of float32's normal range)
# exp(-a) is flushed to 0, so sigmoid(y < -87) = 0 and silu(y < -87) = -0 (true values are
# below 1.5e-36).
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693145751953125), np.float32(1.428606765330187e-06)
_TAYLOR = tuple(np.float32(1.0 / math.factorial(k)) for k in range(8))
_FAST = {"contract", "afn", "arcp"}  # no nnan/ninf: NaN inputs stay NaN


@cpu_kernel(fastmath=_FAST)
def _sigmoid_float32(y, out, times_y, poly, bits):
    """out = sigmoid(y) (times y with `times_y`: SiLU) for 1-D float32 arrays; poly, bits:
    float32 and int32 scratch of y's size."""
    one, limit, c = np.float32(1.0), np.float32(87.0), _TAYLOR
    for i in range(y.size):
        a = min(abs(y[i]), limit)
        n = np.int32(a * _LOG2E + np.float32(0.5))
        q = np.float32(n) * _LN2_LO - (a - np.float32(n) * _LN2_HI)  # -r
        poly[i] = c[0] + q * (c[1] + q * (c[2] + q * (c[3] + q * (c[4] + q * (
            c[5] + q * (c[6] + q * c[7]))))))
        bits[i] = (np.int32(127) - n) << 23  # the float32 2^-n
    scale = bits.view(np.float32)
    for i in range(y.size):
        e = poly[i] * scale[i] if abs(y[i]) <= limit else np.float32(0.0)  # exp(-|y|)
        s = one / (one + e)
        s = s if y[i] >= 0 else e * s  # sigmoid(-a) = exp(-a) sigmoid(a)
        out[i] = s * y[i] if times_y else s


@cpu_kernel
def sigmoid_into(y, out, times_y=False):
    """out = sigmoid(y), or y * sigmoid(y) with `times_y`, for 1-D contiguous arrays of one
    float dtype. out may be y itself, but then the loops do not vectorise (LLVM's alias check
    fails)."""
    if y.itemsize == 4:  # float32 (numba cannot compare dtypes)
        _sigmoid_float32(y, out, times_y, np.empty_like(y), np.empty(y.size, np.int32))
    else:
        for i in range(y.size):
            s = 1.0 / (1.0 + np.exp(-y[i]))
            out[i] = s * y[i] if times_y else s


# ---- fast paths -----------------------------------------------------------------------------


def _numba(ufunc):
    def run(*arrays):
        with np.errstate(over="ignore"):  # exp(-x) = inf: the limit the activations want
            return ufunc(*arrays)
    return run


def _cuda(name: str):
    def run(*arrays):
        return launch_elementwise("activation.cu", name, *arrays)
    return run


for _op, _kernel, _name in (("sigmoid", _sigmoid_kernel, "sigmoid_forward"),
                            ("silu", _silu_kernel, "silu_forward"),
                            ("silu_backward", _silu_backward_kernel, "silu_backward")):
    register(_op, "cpu")(_numba(_kernel))
    register(_op, "cuda")(_cuda(_name))
