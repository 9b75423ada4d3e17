"""Fused group normalisation (and GroupNorm + SiLU), forward and backward: numba on the CPU,
CUDA C on the GPU (`kernels/cuda/norm.cu`), the registered fast paths of the norm ops of
`autograd/ops/norm.py`, which hold the math (and are what these kernels are tested against).

Layout: x is (N, C, M) contiguous, C split into G groups of C // G channels; each (n, g)
group of (C // G) * M values is normalised with its own mean and biased variance, then
scaled and shifted per channel. LayerNorm (N=rows, C=features, M=1, G=1) and BatchNorm
(the batch moved into M, G=C) are the same computation, so the ops reuse these kernels.

    xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = xhat * weight[c] + bias[c]

Statistics are accumulated in float64 whatever the input dtype; mean and rstd are returned
as (N, G) arrays in x's dtype.

Two kernel families: one for (N, C, M) C-contiguous input (one group per loop iteration),
one for channels-last input ((N, M, C) memory, as convolutions leave it; one sample per
iteration, channels innermost so the loops vectorise). The channels-last family can also
apply SiLU to the output (`silu=True`: y -> y * sigmoid(y)), the UNet's GroupNorm -> SiLU
in one pass; its backward recomputes y from x instead of saving it.

On the GPU one kernel family takes the element strides of n, c and m, so it reads either
layout in place (one block per (n, g) group, sums in double in shared memory); y and dx
come back in x's layout, as on the CPU.
"""

from __future__ import annotations

import numba
import numpy as np

from autograd.backend import get_array_module
from autograd.kernels import cuda
from autograd.kernels.activation import sigmoid_into
from autograd.kernels.jit import cpu_kernel
from autograd.kernels.registry import floating, register

# ---- compiled kernels ----------------------------------------------------------------------


# Each kernel handles one (n, g) group; a serial and a parallel (prange) driver loop over
# the groups, the parallel one only for big inputs: on 2 cores a parallel region costs a
# thread wake-up, and a whole scheduler slice when the other core is busy.
PARALLEL_MIN_ELEMENTS = 1 << 15


@cpu_kernel
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


@cpu_kernel
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


@cpu_kernel
def _forward_serial(x, weight, bias, num_groups, eps, out, mean, rstd):
    for row in range(x.shape[0] * num_groups):
        _forward_group(x, weight, bias, num_groups, eps, out, mean, rstd, row)


@cpu_kernel(parallel=True)
def _forward_parallel(x, weight, bias, num_groups, eps, out, mean, rstd):
    for row in numba.prange(x.shape[0] * num_groups):
        _forward_group(x, weight, bias, num_groups, eps, out, mean, rstd, row)


@cpu_kernel
def _backward_serial(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc):
    for row in range(x.shape[0] * num_groups):
        _backward_group(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc, row)


@cpu_kernel(parallel=True)
def _backward_parallel(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc):
    for row in numba.prange(x.shape[0] * num_groups):
        _backward_group(grad, x, mean, rstd, weight, num_groups, grad_x, sum_dy, sum_dy_xc, row)


# Channels-last family: x is (N, M, C) C-contiguous; a prange over samples.


@cpu_kernel
def _channel_stats(x, n, num_groups, eps, mean, rstd):
    """Per-channel float64 (mean, rstd) of sample n's groups; writes mean/rstd[n, g]."""
    m, channels = x.shape[1], x.shape[2]
    per_group = channels // num_groups
    count = per_group * m
    sums = np.zeros(channels)
    for i in range(m):
        for c in range(channels):
            sums[c] += x[n, i, c]
    channel_mean = np.empty(channels)
    for g in range(num_groups):
        mu = sums[g * per_group:(g + 1) * per_group].sum() / count
        channel_mean[g * per_group:(g + 1) * per_group] = mu
        mean[n, g] = mu
    squares = np.zeros(channels)
    for i in range(m):
        for c in range(channels):
            d = x[n, i, c] - channel_mean[c]
            squares[c] += d * d
    channel_rstd = np.empty(channels)
    for g in range(num_groups):
        r = 1.0 / np.sqrt(squares[g * per_group:(g + 1) * per_group].sum() / count + eps)
        channel_rstd[g * per_group:(g + 1) * per_group] = r
        rstd[n, g] = r
    return channel_mean, channel_rstd


@cpu_kernel
def _scale_shift(weight, bias, channel_mean, channel_rstd, dtype_like):
    """Per-channel (scale, shift) with y = x * scale + shift, in dtype_like's dtype."""
    scale = weight * channel_rstd
    return scale.astype(dtype_like.dtype), (bias - channel_mean * scale).astype(dtype_like.dtype)


@cpu_kernel
def _affine_channels_last(x, scale, shift, out):
    """out = x * scale + shift per channel, for one sample's (M, C) x: the normalised y."""
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = x[i, c] * scale[c] + shift[c]


# The per-sample bodies are separate functions: inlined into the prange loop, the
# vectorised sigmoid ran 1.4x slower (measured).


@cpu_kernel
def _forward_sample(x, weight, bias, num_groups, eps, silu, out, mean, rstd, n):
    channel_mean, channel_rstd = _channel_stats(x, n, num_groups, eps, mean, rstd)
    scale, shift = _scale_shift(weight, bias, channel_mean, channel_rstd, x)
    if silu:  # y into scratch: with out aliasing y, the sigmoid loop would not vectorise
        y = np.empty_like(x[n])
        _affine_channels_last(x[n], scale, shift, y)
        sigmoid_into(y.ravel(), out[n].ravel(), True)
    else:
        _affine_channels_last(x[n], scale, shift, out[n])


@cpu_kernel(parallel=True)
def _forward_channels_last(x, weight, bias, num_groups, eps, silu, out, mean, rstd):
    for n in numba.prange(x.shape[0]):
        _forward_sample(x, weight, bias, num_groups, eps, silu, out, mean, rstd, n)


@cpu_kernel
def _backward_sample(grad, x, mean, rstd, weight, bias, silu, grad_x, sum_dy, sum_dy_xhat, n):
    """grad_x[n] holds dy (the gradient at the norm's output) between the two passes."""
    m, channels = x.shape[1], x.shape[2]
    num_groups = mean.shape[1]
    per_group = channels // num_groups
    count = per_group * m
    channel_mean = np.repeat(mean[n].astype(np.float64), per_group)
    channel_rstd = np.repeat(rstd[n].astype(np.float64), per_group)
    rstd_x = channel_rstd.astype(x.dtype)
    mean_x = channel_mean.astype(x.dtype)
    if silu:  # dy = grad * s (1 + y (1 - s)), s = sigmoid(y), y recomputed into grad_x
        scale, shift = _scale_shift(weight, bias, channel_mean, channel_rstd, x)
        _affine_channels_last(x[n], scale, shift, grad_x[n])
        y, upstream = grad_x[n].ravel(), grad[n].ravel()
        sig = np.empty_like(y)
        sigmoid_into(y, sig)
        for i in range(y.size):
            y[i] = upstream[i] * sig[i] * (1 + y[i] * (1 - sig[i]))
    else:
        grad_x[n] = grad[n]
    for i in range(m):
        for c in range(channels):
            dy = grad_x[n, i, c]
            sum_dy[n, c] += dy
            sum_dy_xhat[n, c] += dy * ((x[n, i, c] - mean_x[c]) * rstd_x[c])
    weighted = weight * sum_dy[n]
    weighted_xhat = weight * sum_dy_xhat[n]
    mean_dxhat = np.empty(channels, x.dtype)  # mean(dxhat) of each channel's group
    mean_dxhat_xhat = np.empty(channels, x.dtype)  # mean(dxhat * xhat)
    for g in range(num_groups):
        group = slice(g * per_group, (g + 1) * per_group)
        mean_dxhat[group] = weighted[group].sum() / count
        mean_dxhat_xhat[group] = weighted_xhat[group].sum() / count
    wr = (weight * channel_rstd).astype(x.dtype)
    for i in range(m):
        for c in range(channels):
            xhat = (x[n, i, c] - mean_x[c]) * rstd_x[c]
            grad_x[n, i, c] = (wr[c] * grad_x[n, i, c]
                               - rstd_x[c] * (mean_dxhat[c] + xhat * mean_dxhat_xhat[c]))


@cpu_kernel(parallel=True)
def _backward_channels_last(grad, x, mean, rstd, weight, bias, silu, grad_x, sum_dy,
                            sum_dy_xhat):
    for n in numba.prange(x.shape[0]):
        _backward_sample(grad, x, mean, rstd, weight, bias, silu, grad_x, sum_dy, sum_dy_xhat,
                         n)


# ---- numba drivers --------------------------------------------------------------------------


def _layout(x: np.ndarray) -> str:
    """'channels_last' for (N, M, C) memory (convolutions leave it; read in place: a
    transposing copy costs several times the kernel), 'contiguous' for C-contiguous."""
    if x.flags.c_contiguous:
        return "contiguous"
    if x.transpose(0, 2, 1).flags.c_contiguous:
        return "channels_last"
    return "strided"


def _as_channels_last(x: np.ndarray) -> np.ndarray:
    """x (N, C, M) as an (N, M, C) C-contiguous array (a view when its memory is already)."""
    return get_array_module(x).ascontiguousarray(x.transpose(0, 2, 1))


def _forward_numba(x, weight, bias, num_groups, eps, silu):
    layout = _layout(x)
    weight, bias = (np.ascontiguousarray(a, dtype=x.dtype) for a in (weight, bias))
    mean = np.empty((x.shape[0], num_groups), x.dtype)
    rstd = np.empty_like(mean)
    if silu or layout == "channels_last":
        x_last = _as_channels_last(x)
        out = np.empty_like(x_last)
        _forward_channels_last(x_last, weight, bias, num_groups, float(eps), silu, out, mean,
                               rstd)
        return out.transpose(0, 2, 1), mean, rstd
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    kernel = _forward_parallel if x.size >= PARALLEL_MIN_ELEMENTS else _forward_serial
    kernel(x, weight, bias, num_groups, float(eps), out, mean, rstd)
    return out, mean, rstd


def _backward_numba(grad, x, mean, rstd, weight, num_groups, bias, silu):
    layout = _layout(x)
    grad = grad.astype(x.dtype, copy=False)
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    if silu or layout == "channels_last":
        x_last = _as_channels_last(x)
        grad_x = np.empty_like(x_last)
        sum_dy = np.zeros((x.shape[0], x.shape[1]))
        sum_dy_xhat = np.zeros_like(sum_dy)
        bias = np.zeros_like(weight) if bias is None else bias
        _backward_channels_last(_as_channels_last(grad), x_last, np.ascontiguousarray(mean),
                                np.ascontiguousarray(rstd), weight,
                                np.ascontiguousarray(bias, dtype=x.dtype), silu, grad_x,
                                sum_dy, sum_dy_xhat)
        return (grad_x.transpose(0, 2, 1), sum_dy_xhat.sum(axis=0).astype(x.dtype),
                sum_dy.sum(axis=0).astype(x.dtype))
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad)
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


# ---- CUDA launchers ------------------------------------------------------------------------
# Every array of one launch has x's layout; the kernels get its element strides.

NORM_THREADS = 256  # threads per (n, g) block: NORM_THREADS of norm.cu, its shared arrays


def _memory(a, channels_last: bool):
    """a (N, C, M) as the C-contiguous array holding it in the given layout: (N, M, C) for
    channels-last, (N, C, M) otherwise (a itself, or a view of it, when it is already)."""
    xp = get_array_module(a)
    return xp.ascontiguousarray(a.transpose(0, 2, 1) if channels_last else a)


def _view(memory, channels_last: bool):
    """The (N, C, M) view of `_memory`'s array."""
    return memory.transpose(0, 2, 1) if channels_last else memory


def _strides(shape: tuple[int, ...], channels_last: bool) -> tuple[np.int64, ...]:
    """Element strides (sn, sc, sm) of an (N, C, M) array in the given layout."""
    n, c, m = shape
    return tuple(np.int64(s) for s in ((m * c, 1, c) if channels_last else (c * m, m, 1)))


def _sizes(shape: tuple[int, ...], num_groups: int) -> tuple[np.int64, ...]:
    return np.int64(shape[1]), np.int64(shape[2]), np.int64(num_groups)


def _team_size(per_group: int, m: int, threads: int = NORM_THREADS) -> int:
    """Threads per channel in the backward's per-channel sums: a power of two, about
    threads / per_group (all channels of a group at once), at most m rounded up."""
    team = 1
    while team * 2 <= threads // per_group and team < m:
        team *= 2
    return team


def _forward_cuda(x, weight, bias, num_groups, eps, silu):
    xp = get_array_module(x)
    last = _layout(x) == "channels_last"
    x_memory = _memory(x, last)
    weight, bias = (xp.ascontiguousarray(a, dtype=x.dtype) for a in (weight, bias))
    y_memory = xp.empty_like(x_memory)
    mean = xp.empty((x.shape[0], num_groups), x.dtype)
    rstd = xp.empty_like(mean)
    if x.size:  # one block per (n, g) group
        kernel = cuda.kernel("norm.cu", "group_norm_forward", x.dtype)
        kernel((x.shape[0] * num_groups,), (NORM_THREADS,),
               (x_memory, weight, bias, y_memory, mean, rstd, *_sizes(x.shape, num_groups),
                *_strides(x.shape, last), np.float64(eps), np.int32(silu)))
    return _view(y_memory, last), mean, rstd


def _backward_cuda(grad, x, mean, rstd, weight, num_groups, bias, silu):
    xp = get_array_module(x)
    last = _layout(x) == "channels_last"
    x_memory = _memory(x, last)
    grad_memory = _memory(grad.astype(x.dtype, copy=False), last)
    mean, rstd, weight = (xp.ascontiguousarray(a, dtype=x.dtype) for a in (mean, rstd, weight))
    bias = xp.zeros_like(weight) if bias is None else xp.ascontiguousarray(bias, dtype=x.dtype)
    dx_memory = xp.empty_like(x_memory)
    sum_dy = xp.zeros(x.shape[:2], np.float64)
    sum_dy_xhat = xp.zeros_like(sum_dy)
    if x.size:  # one block per (n, g) group
        team = _team_size(x.shape[1] // num_groups, x.shape[2])
        kernel = cuda.kernel("norm.cu", "group_norm_backward", x.dtype)
        kernel((x.shape[0] * num_groups,), (NORM_THREADS,),
               (grad_memory, x_memory, mean, rstd, weight, bias, dx_memory, sum_dy,
                sum_dy_xhat, *_sizes(x.shape, num_groups), *_strides(x.shape, last),
                np.int32(silu), np.int32(team)))
    return (_view(dx_memory, last), sum_dy_xhat.sum(axis=0).astype(x.dtype),
            sum_dy.sum(axis=0).astype(x.dtype))


# ---- registration --------------------------------------------------------------------------
# Forward: (x (N, C, M), weight (C,), bias (C,), num_groups, eps) -> (y, mean (N, G), rstd);
# backward: (grad, x, mean, rstd, weight, bias, num_groups) -> (dx, dweight, dbias). Float32
# or float64 x of any layout (channels-last is read in place, others made contiguous).


def _fused(forward, backward, silu: bool):
    def run_forward(x, weight, bias, num_groups, eps):
        return forward(x, weight, bias, num_groups, eps, silu)

    def run_backward(grad, x, mean, rstd, weight, bias, num_groups):
        return backward(grad, x, mean, rstd, weight, num_groups, bias, silu)

    return run_forward, run_backward


for _device, _forward, _backward in (("cpu", _forward_numba, _backward_numba),
                                     ("cuda", _forward_cuda, _backward_cuda)):
    for _op, _silu in (("group_norm", False), ("group_norm_silu", True)):
        _run_forward, _run_backward = _fused(_forward, _backward, _silu)
        register(_op, _device, supports=floating)(_run_forward)
        register(_op + "_backward", _device, supports=floating)(_run_backward)
