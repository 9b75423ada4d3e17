"""Fused softmax over the last axis, forward and backward: numba kernels on the CPU, CUDA
kernels (`cuda/softmax.cu`) on the GPU, the registered fast paths of the softmax math in
`autograd/ops/reduction.py` (used by Softmax and by attention).

The kernels take 2-D (rows, L) contiguous float32/float64 arrays (the fast paths
reshape). A row whose entries are all -inf (an attention query that may attend to nothing)
gets `empty_row_value` everywhere: 0 for attention (and a zero gradient), NaN as in PyTorch's
softmax otherwise.

    y = exp(x - max x) / sum exp(x - max x);  dx = y * (g - sum(g * y))
"""

from __future__ import annotations

import numba
import numpy as np

from autograd.backend import get_array_module
from autograd.kernels import cuda as cuda_kernels
from autograd.kernels.jit import cpu_kernel
from autograd.kernels.registry import floating, register

# ---- compiled kernels ----------------------------------------------------------------------
# Each kernel handles one row; a serial and a parallel (prange) driver loop over the rows,
# the parallel one only for big inputs (as in autograd.kernels.norm).
PARALLEL_MIN_ELEMENTS = 1 << 15


@cpu_kernel
def _forward_row(x, out, empty_row_value, r):
    length = x.shape[1]
    peak = x[r, 0]
    for j in range(1, length):
        if x[r, j] > peak:
            peak = x[r, j]
    if peak == -np.inf:
        for j in range(length):
            out[r, j] = empty_row_value
        return
    total = 0.0
    for j in range(length):
        e = np.exp(x[r, j] - peak)
        out[r, j] = e
        total += e
    inverse = 1.0 / total
    for j in range(length):
        out[r, j] *= inverse


@cpu_kernel
def _backward_row(grad, y, grad_x, r):
    length = y.shape[1]
    dot = 0.0
    for j in range(length):
        dot += grad[r, j] * y[r, j]
    for j in range(length):
        grad_x[r, j] = y[r, j] * (grad[r, j] - dot)


@cpu_kernel
def _forward_serial(x, out, empty_row_value):
    for r in range(x.shape[0]):
        _forward_row(x, out, empty_row_value, r)


@cpu_kernel(parallel=True)
def _forward_parallel(x, out, empty_row_value):
    for r in numba.prange(x.shape[0]):
        _forward_row(x, out, empty_row_value, r)


@cpu_kernel
def _backward_serial(grad, y, grad_x):
    for r in range(y.shape[0]):
        _backward_row(grad, y, grad_x, r)


@cpu_kernel(parallel=True)
def _backward_parallel(grad, y, grad_x):
    for r in numba.prange(y.shape[0]):
        _backward_row(grad, y, grad_x, r)


# ---- CUDA launchers -------------------------------------------------------------------------
# One block per row (a grid-stride loop over rows past MAX_BLOCKS), its threads a power of
# two from one warp up to ROW_THREADS (softmax.cu's MAX_THREADS, the size of its shared
# reduction buffer): a short row (attention over 16 tokens) keeps one warp busy rather than
# idling 256 threads.
MAX_BLOCKS = 1 << 16
ROW_THREADS = 256


def _row_launch(rows: int, length: int) -> tuple[tuple[int], tuple[int]]:
    threads = min(ROW_THREADS, max(32, 1 << (length - 1).bit_length()))
    return (min(rows, MAX_BLOCKS),), (threads,)


def _softmax_forward_cuda(rows, empty_row_value: float):
    out = get_array_module(rows).empty_like(rows)
    real = rows.dtype.type
    kernel = cuda_kernels.kernel("softmax.cu", "softmax_forward", rows.dtype)
    kernel(*_row_launch(*rows.shape), (rows, out, np.int64(rows.shape[0]),
                                       np.int64(rows.shape[1]),
                                       real(empty_row_value)))
    return out


def _softmax_backward_cuda(rows_grad, rows_y):
    grad_x = get_array_module(rows_y).empty_like(rows_y)
    kernel = cuda_kernels.kernel("softmax.cu", "softmax_backward", rows_y.dtype)
    kernel(*_row_launch(*rows_y.shape), (rows_grad, rows_y, grad_x,
                                         np.int64(rows_y.shape[0]), np.int64(rows_y.shape[1])))
    return grad_x


# ---- registration --------------------------------------------------------------------------
# forward (x, empty_row_value) -> y and backward (grad, y) -> dx, over the last axis of a
# C-contiguous float32/float64 array (other axes and layouts: the op's own math).


def _supports(x, dim: int = -1) -> bool:
    return (floating(x) and x.ndim >= 1 and dim in (-1, x.ndim - 1) and x.size > 0
            and x.flags.c_contiguous)


def _rows(x):
    return x.reshape(-1, x.shape[-1])


@register("softmax", "cpu", supports=_supports)
def _softmax_numba(x, empty_row_value: float):
    rows = _rows(x)
    out = np.empty_like(rows)
    kernel = _forward_parallel if rows.size >= PARALLEL_MIN_ELEMENTS else _forward_serial
    kernel(rows, out, float(empty_row_value))
    return out.reshape(x.shape)


@register("softmax_backward", "cpu", supports=_supports)
def _softmax_backward_numba(grad, y):
    rows_y, rows_grad = _rows(y), _rows(np.ascontiguousarray(grad, dtype=y.dtype))
    grad_x = np.empty_like(rows_y)
    kernel = _backward_parallel if rows_y.size >= PARALLEL_MIN_ELEMENTS else _backward_serial
    kernel(rows_grad, rows_y, grad_x)
    return grad_x.reshape(y.shape)


@register("softmax", "cuda", supports=_supports)
def _softmax_cuda(x, empty_row_value: float):
    return _softmax_forward_cuda(_rows(x), empty_row_value).reshape(x.shape)


@register("softmax_backward", "cuda", supports=_supports)
def _softmax_backward_cuda_path(grad, y):
    xp = get_array_module(y)
    rows_grad = _rows(xp.ascontiguousarray(grad.astype(y.dtype, copy=False)))
    return _softmax_backward_cuda(rows_grad, _rows(y)).reshape(y.shape)
