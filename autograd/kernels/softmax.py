"""Fused softmax over the last axis (numba), forward and backward, beside NumPy references.

The kernels take 2-D (rows, L) contiguous float32/float64 arrays (the dispatchers
reshape). A row whose entries are all -inf (an attention query that may attend to nothing)
gets all-zero probabilities and a zero gradient with `zero_empty_rows=True` (attention), and
NaN as in PyTorch's softmax otherwise.

    y = exp(x - max x) / sum exp(x - max x);  dx = y * (g - sum(g * y))
"""

from __future__ import annotations

import numba
import numpy as np

from autograd.kernels import use_reference_kernels

# ---- references (plain NumPy) --------------------------------------------------------------


def softmax_forward_reference(x: np.ndarray, zero_empty_rows: bool = True) -> np.ndarray:
    """Softmax over the last axis; all -inf rows give zeros (or NaN)."""
    peak = np.max(x, axis=-1, keepdims=True)
    empty = np.isneginf(peak)
    shifted = np.exp(x - np.where(empty, 0, peak))
    probs = shifted / np.where(empty, 1, np.sum(shifted, axis=-1, keepdims=True))
    return np.where(empty, 0 if zero_empty_rows else np.nan, probs).astype(x.dtype, copy=False)


def softmax_backward_reference(grad: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dx = y * (g - sum(g y)) over the last axis."""
    return y * (grad - np.sum(grad * y, axis=-1, keepdims=True))


# ---- compiled kernels ----------------------------------------------------------------------
# Each kernel handles one row; a serial and a parallel (prange) driver loop over the rows,
# the parallel one only for big inputs (as in autograd.kernels.norm).
PARALLEL_MIN_ELEMENTS = 1 << 15


@numba.njit(nogil=True, cache=True)
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


@numba.njit(nogil=True, cache=True)
def _backward_row(grad, y, grad_x, r):
    length = y.shape[1]
    dot = 0.0
    for j in range(length):
        dot += grad[r, j] * y[r, j]
    for j in range(length):
        grad_x[r, j] = y[r, j] * (grad[r, j] - dot)


@numba.njit(nogil=True, cache=True)
def _forward_serial(x, out, empty_row_value):
    for r in range(x.shape[0]):
        _forward_row(x, out, empty_row_value, r)


@numba.njit(nogil=True, cache=True, parallel=True)
def _forward_parallel(x, out, empty_row_value):
    for r in numba.prange(x.shape[0]):
        _forward_row(x, out, empty_row_value, r)


@numba.njit(nogil=True, cache=True)
def _backward_serial(grad, y, grad_x):
    for r in range(y.shape[0]):
        _backward_row(grad, y, grad_x, r)


@numba.njit(nogil=True, cache=True, parallel=True)
def _backward_parallel(grad, y, grad_x):
    for r in numba.prange(y.shape[0]):
        _backward_row(grad, y, grad_x, r)


# ---- dispatch ------------------------------------------------------------------------------


def _as_rows(x: np.ndarray) -> np.ndarray:
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"softmax kernel needs float32 or float64, got {x.dtype}")
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)


def softmax_forward(x: np.ndarray, zero_empty_rows: bool = True) -> np.ndarray:
    """Softmax over the last axis of x (any shape); rows of -inf give zeros, else NaN."""
    if use_reference_kernels() or x.size == 0:
        return softmax_forward_reference(x, zero_empty_rows)
    rows = _as_rows(x)
    out = np.empty_like(rows)
    kernel = _forward_parallel if rows.size >= PARALLEL_MIN_ELEMENTS else _forward_serial
    kernel(rows, out, 0.0 if zero_empty_rows else np.nan)
    return out.reshape(x.shape)


def softmax_backward(grad: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of softmax over the last axis, given its output y and the upstream grad."""
    if use_reference_kernels() or y.size == 0:
        return softmax_backward_reference(grad, y)
    rows_y = _as_rows(y)
    rows_grad = _as_rows(np.asarray(grad, dtype=y.dtype))
    grad_x = np.empty_like(rows_y)
    kernel = _backward_parallel if rows_y.size >= PARALLEL_MIN_ELEMENTS else _backward_serial
    kernel(rows_grad, rows_y, grad_x)
    return grad_x.reshape(y.shape)
