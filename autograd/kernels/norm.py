"""Fused group normalisation (numba), forward and backward, each beside a NumPy reference.

Layout: x is (N, C, M) contiguous, C split into G groups of C // G channels; each (n, g)
group of (C // G) * M values is normalised with its own mean and biased variance, then
scaled and shifted per channel. LayerNorm (N=rows, C=features, M=1, G=1) and BatchNorm
(the batch moved into M, G=C) are the same computation, so the ops reuse these kernels.

    xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = xhat * weight[c] + bias[c]

Statistics are accumulated in float64 whatever the input dtype; mean and rstd are returned
as (N, G) arrays in x's dtype.
"""

from __future__ import annotations

import numba
import numpy as np

from autograd.kernels import use_reference_kernels

# ---- references (plain NumPy) --------------------------------------------------------------


def group_norm_forward_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                                 num_groups: int, eps: float):
    """x: (N, C, M), weight/bias: (C,) -> (y (N, C, M), mean (N, G), rstd (N, G))."""
    n, c, m = x.shape
    grouped = x.reshape(n, num_groups, (c // num_groups) * m).astype(np.float64)
    mean = grouped.mean(axis=2)
    rstd = 1.0 / np.sqrt(grouped.var(axis=2) + eps)
    xhat = ((grouped - mean[:, :, None]) * rstd[:, :, None]).reshape(n, c, m)
    y = xhat * weight[None, :, None] + bias[None, :, None]
    return y.astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


def group_norm_backward_reference(grad: np.ndarray, x: np.ndarray, mean: np.ndarray,
                                  rstd: np.ndarray, weight: np.ndarray, num_groups: int):
    """Gradients (dx (N, C, M), dweight (C,), dbias (C,)) of y = xhat * w + b, with
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) over each group."""
    n, c, m = x.shape
    size = (c // num_groups) * m
    g64 = grad.astype(np.float64)
    xhat = ((x.reshape(n, num_groups, size) - mean[:, :, None].astype(np.float64))
            * rstd[:, :, None]).reshape(n, c, m)
    dxhat = (g64 * weight[None, :, None]).reshape(n, num_groups, size)
    flat_xhat = xhat.reshape(n, num_groups, size)
    dx = rstd[:, :, None] * (dxhat - dxhat.mean(axis=2, keepdims=True)
                             - flat_xhat * (dxhat * flat_xhat).mean(axis=2, keepdims=True))
    dweight = (g64 * xhat).sum(axis=(0, 2))
    dbias = g64.sum(axis=(0, 2))
    return dx.reshape(n, c, m).astype(x.dtype), dweight.astype(x.dtype), dbias.astype(x.dtype)


# ---- compiled kernels ----------------------------------------------------------------------


# Each kernel handles one (n, g) group; a serial and a parallel (prange) driver loop over
# the groups, the parallel one only for big inputs: on 2 cores a parallel region costs a
# thread wake-up, and a whole scheduler slice when the other core is busy.
PARALLEL_MIN_ELEMENTS = 1 << 15


@numba.njit(cache=True)
def _forward_group(x, weight, bias, num_groups, eps, out, mean, rstd, row):
    channels, m = x.shape[1], x.shape[2]
    per_group = channels // num_groups
    count = per_group * m
    n, g = row // num_groups, row % num_groups
    first = g * per_group
    total = 0.0
    for c in range(first, first + per_group):
        for i in range(m):
            total += x[n, c, i]
    mu = total / count
    squares = 0.0
    for c in range(first, first + per_group):
        for i in range(m):
            d = x[n, c, i] - mu
            squares += d * d
    r = 1.0 / np.sqrt(squares / count + eps)
    mean[n, g] = mu
    rstd[n, g] = r
    for c in range(first, first + per_group):
        scale = weight[c] * r
        for i in range(m):
            out[n, c, i] = (x[n, c, i] - mu) * scale + bias[c]


@numba.njit(cache=True)
def _backward_group(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc, row):
    channels, m = x.shape[1], x.shape[2]
    per_group = channels // num_groups
    count = per_group * m
    n, g = row // num_groups, row % num_groups
    first = g * per_group
    mu, r = np.float64(mean[n, g]), np.float64(rstd[n, g])
    sum_dxhat = 0.0  # sum of w * dy over the group
    sum_dxhat_xc = 0.0  # sum of w * dy * (x - mu) over the group
    for c in range(first, first + per_group):
        s_dy, s_dy_xc = 0.0, 0.0
        for i in range(m):
            dy = grad[n, c, i]
            s_dy += dy
            s_dy_xc += dy * (x[n, c, i] - mu)
        sum_dy[n, c] = s_dy
        sum_dy_xc[n, c] = s_dy_xc
        sum_dxhat += weight[c] * s_dy
        sum_dxhat_xc += weight[c] * s_dy_xc
    mean_dxhat = sum_dxhat / count
    xc_coefficient = r * r * sum_dxhat_xc / count  # r * mean(dxhat * xhat) / (x - mu)
    for c in range(first, first + per_group):
        wr = weight[c] * r
        for i in range(m):
            grad_x[n, c, i] = (wr * grad[n, c, i]
                               - r * (mean_dxhat + (x[n, c, i] - mu) * xc_coefficient))


@numba.njit(cache=True)
def _forward_serial(x, weight, bias, num_groups, eps, out, mean, rstd):
    for row in range(x.shape[0] * num_groups):
        _forward_group(x, weight, bias, num_groups, eps, out, mean, rstd, row)


@numba.njit(cache=True, parallel=True)
def _forward_parallel(x, weight, bias, num_groups, eps, out, mean, rstd):
    for row in numba.prange(x.shape[0] * num_groups):
        _forward_group(x, weight, bias, num_groups, eps, out, mean, rstd, row)


@numba.njit(cache=True)
def _backward_serial(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc):
    for row in range(x.shape[0] * num_groups):
        _backward_group(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc, row)


@numba.njit(cache=True, parallel=True)
def _backward_parallel(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc):
    for row in numba.prange(x.shape[0] * num_groups):
        _backward_group(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc, row)


# ---- dispatch ------------------------------------------------------------------------------


def _checked(x: np.ndarray, name: str) -> np.ndarray:
    """x as the kernels take it: (N, C, M) C-contiguous, or channels-last ((N, M, C) memory,
    as convolutions leave it), which the kernels read in place: a transposing copy costs
    several times the kernel itself."""
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"norm kernel: {name} must be float32 or float64, got {x.dtype}")
    if x.flags.c_contiguous or x.transpose(0, 2, 1).flags.c_contiguous:
        return x
    return np.ascontiguousarray(x)


def group_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, num_groups: int,
                       eps: float):
    """x: (N, C, M), weight/bias: (C,) in x's dtype -> (y, mean (N, G), rstd (N, G))."""
    if use_reference_kernels():
        return group_norm_forward_reference(x, weight, bias, num_groups, eps)
    x = _checked(x, "x")
    weight, bias = (np.ascontiguousarray(a, dtype=x.dtype) for a in (weight, bias))
    out = np.empty_like(x)
    mean = np.empty((x.shape[0], num_groups), x.dtype)
    rstd = np.empty_like(mean)
    kernel = _forward_parallel if x.size >= PARALLEL_MIN_ELEMENTS else _forward_serial
    kernel(x, weight, bias, num_groups, float(eps), out, mean, rstd)
    return out, mean, rstd


def group_norm_backward(grad: np.ndarray, x: np.ndarray, mean: np.ndarray, rstd: np.ndarray,
                        weight: np.ndarray, num_groups: int):
    """(dx (N, C, M), dweight (C,), dbias (C,)) for upstream `grad` (N, C, M)."""
    if use_reference_kernels():
        return group_norm_backward_reference(grad, x, mean, rstd, weight, num_groups)
    x = _checked(x, "x")
    grad = _checked(grad.astype(x.dtype, copy=False), "grad")
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    grad_x = np.empty_like(x)
    sum_dy = np.empty(x.shape[:2])
    sum_dy_xc = np.empty(x.shape[:2])
    kernel = _backward_parallel if x.size >= PARALLEL_MIN_ELEMENTS else _backward_serial
    kernel(grad, x, np.ascontiguousarray(mean), np.ascontiguousarray(rstd), weight,
           num_groups, grad_x, sum_dy, sum_dy_xc)
    per_group = x.shape[1] // num_groups
    group_rstd = np.repeat(rstd.astype(np.float64), per_group, axis=1)  # (N, C)
    dweight = (sum_dy_xc * group_rstd).sum(axis=0)  # dw[c] = sum_n rstd * sum dy (x - mu)
    dbias = sum_dy.sum(axis=0)
    return grad_x, dweight.astype(x.dtype), dbias.astype(x.dtype)
