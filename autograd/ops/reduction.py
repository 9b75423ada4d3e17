"""Reductions over `dim` (PyTorch's names; NumPy's `axis`/`keepdims` are accepted too):
sum, mean, var, std, max/min, amax/amin, logsumexp, softmax, log_softmax, argmax/argmin."""

from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from autograd.backend import get_array_module
from autograd.function import Function
from autograd.kernels import registry
from autograd.tensor import Tensor

Dim = int | tuple[int, ...] | None


def normalize_dims(dim: Dim, ndim: int) -> tuple[int, ...]:
    """Reduction dims as a sorted tuple of non-negative ints (None means all)."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        size = builtins.max(ndim, 1)
        if not -size <= d < size:
            raise IndexError(f"dim {d} is out of range for a tensor with {ndim} dims")
        out.append(int(d) % size)
    if len(set(out)) != len(out):
        raise ValueError(f"dim {dim} repeats a dimension")
    return tuple(sorted(out)) if ndim else ()


def _resolve(dim, keepdim, axis, keepdims):
    """Accept NumPy's spellings `axis` and `keepdims` beside PyTorch's `dim` and `keepdim`."""
    return (dim if axis is None else axis), bool(keepdim or keepdims)


def expand_reduced(grad, shape, dims, keepdim):
    """Broadcast a reduced gradient back over the reduced dims of `shape`."""
    xp = get_array_module(grad)
    if not keepdim:
        grad = xp.expand_dims(grad, dims)
    return xp.broadcast_to(grad, shape)


class Sum(Function):
    def __init__(self, dims, keepdim) -> None:
        self.dims, self.keepdim = dims, keepdim

    def forward(self, a):
        self.shape = a.shape
        return get_array_module(a).asarray(a.sum(axis=self.dims, keepdims=self.keepdim))

    def backward(self, grad):  # every element contributes once
        return expand_reduced(grad, self.shape, self.dims, self.keepdim)


class Mean(Function):
    def __init__(self, dims, keepdim) -> None:
        self.dims, self.keepdim = dims, keepdim

    def forward(self, a):
        self.shape = a.shape
        self.count = math.prod(a.shape[d] for d in self.dims)
        return get_array_module(a).asarray(a.mean(axis=self.dims, keepdims=self.keepdim))

    def backward(self, grad):  # each element contributes 1/count
        return expand_reduced(grad / self.count, self.shape, self.dims, self.keepdim)


class Var(Function):
    def __init__(self, dims, correction, keepdim) -> None:
        self.dims, self.correction, self.keepdim = dims, correction, keepdim

    def forward(self, a):
        xp = get_array_module(a)
        count = math.prod(a.shape[d] for d in self.dims)
        centered = a - a.mean(axis=self.dims, keepdims=True)
        self.denominator = builtins.max(count - self.correction, 0)
        squares = xp.sum(centered * centered, axis=self.dims, keepdims=self.keepdim)
        self.save_for_backward(centered)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.asarray(squares / self.denominator)

    def backward(self, grad):  # d var = 2 (a - mean) / (N - correction) da
        (centered,) = self.saved
        grad = grad if self.keepdim else get_array_module(grad).expand_dims(grad, self.dims)
        with np.errstate(divide="ignore", invalid="ignore"):
            return grad * centered * (2 / self.denominator)


class AMax(Function):
    """amax/amin over `dims`. Subgradient at ties (PyTorch's): the gradient is shared
    evenly among the elements that reach the extreme, 1/k each for k tied elements."""

    def __init__(self, dims, keepdim, largest: bool) -> None:
        self.dims, self.keepdim, self.largest = dims, keepdim, largest

    def forward(self, a):
        xp = get_array_module(a)
        reduce = xp.max if self.largest else xp.min
        out = xp.asarray(reduce(a, axis=self.dims, keepdims=self.keepdim))
        self.save_for_backward(a, out)
        return out

    def backward(self, grad):  # shared evenly among the elements that reach the extreme
        a, out = self.saved
        xp = get_array_module(a)
        out = out if self.keepdim else xp.expand_dims(out, self.dims)
        winners = a == out
        grad = grad if self.keepdim else xp.expand_dims(grad, self.dims)
        return grad * winners / winners.sum(axis=self.dims, keepdims=True)


class LogSumExp(Function):
    def __init__(self, dims, keepdim) -> None:
        self.dims, self.keepdim = dims, keepdim

    def forward(self, a):
        xp = get_array_module(a)
        peak = xp.max(a, axis=self.dims, keepdims=True)
        peak = xp.where(xp.isfinite(peak), peak, 0)
        total = xp.sum(xp.exp(a - peak), axis=self.dims, keepdims=True)
        out = xp.log(total) + peak
        self.save_for_backward(xp.exp(a - out))  # the softmax of a
        return out if self.keepdim else xp.squeeze(out, axis=self.dims)

    def backward(self, grad):  # d logsumexp = softmax da
        (softmax,) = self.saved
        grad = grad if self.keepdim else get_array_module(grad).expand_dims(grad, self.dims)
        return grad * softmax


def softmax_forward(x, dim: int | None = -1, empty_row_value: float = np.nan):
    """y = exp(x - max x) / sum exp(x - max x) over `dim` (the max keeps exp finite). A row of
    -inf only (nothing to attend to) gives empty_row_value: NaN as PyTorch, 0 for attention."""
    fast = registry.lookup("softmax", x, dim=dim)
    if fast is not None:
        return fast(x, empty_row_value)
    xp = get_array_module(x)
    if x.size == 0:
        return xp.empty_like(x)
    peak = xp.max(x, axis=dim, keepdims=True)
    empty = xp.isneginf(peak)
    shifted = xp.exp(x - xp.where(empty, 0, peak))
    y = shifted / xp.where(empty, 1, xp.sum(shifted, axis=dim, keepdims=True))
    return xp.where(empty, x.dtype.type(empty_row_value), y).astype(x.dtype, copy=False)


def softmax_backward(grad, y, dim: int | None = -1):
    """dx = y * (g - sum(g y)) over `dim`: dy_i/dx_j = y_i ([i = j] - y_j)."""
    fast = registry.lookup("softmax_backward", y, dim=dim)
    if fast is not None:
        return fast(grad, y)
    return y * (grad - (grad * y).sum(axis=dim, keepdims=True))


class Softmax(Function):
    def __init__(self, dim: int | None) -> None:
        self.dim = dim

    def forward(self, a):
        out = softmax_forward(a, self.dim)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved
        return softmax_backward(grad, out, self.dim)


class LogSoftmax(Function):
    def __init__(self, dim: int) -> None:
        self.dim = dim

    def forward(self, a):
        xp = get_array_module(a)
        shifted = a - xp.max(a, axis=self.dim, keepdims=True)
        out = shifted - xp.log(xp.sum(xp.exp(shifted), axis=self.dim, keepdims=True))
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # d log_softmax = g - softmax * sum(g)
        (out,) = self.saved
        xp = get_array_module(out)
        return grad - xp.exp(out) * xp.sum(grad, axis=self.dim, keepdims=True)


# ---- public functions ---------------------------------------------------------------------


def sum(a: Tensor, dim: Dim = None, keepdim: bool = False, *, axis=None, keepdims=False):
    dim, keepdim = _resolve(dim, keepdim, axis, keepdims)
    return Sum.apply(a, dims=normalize_dims(dim, a.ndim), keepdim=keepdim)


def mean(a: Tensor, dim: Dim = None, keepdim: bool = False, *, axis=None, keepdims=False):
    dim, keepdim = _resolve(dim, keepdim, axis, keepdims)
    return Mean.apply(a, dims=normalize_dims(dim, a.ndim), keepdim=keepdim)


def var(a: Tensor, dim: Dim = None, *, correction: int = 1, keepdim: bool = False,
        unbiased: bool | None = None, axis=None, keepdims=False, ddof: int | None = None):
    """Variance with Bessel's correction by default (PyTorch); `ddof` is NumPy's name."""
    dim, keepdim = _resolve(dim, keepdim, axis, keepdims)
    if unbiased is not None:
        correction = int(unbiased)
    if ddof is not None:
        correction = ddof
    return Var.apply(a, dims=normalize_dims(dim, a.ndim), correction=correction, keepdim=keepdim)


def std(a: Tensor, dim: Dim = None, *, correction: int = 1, keepdim: bool = False,
        unbiased: bool | None = None, axis=None, keepdims=False, ddof: int | None = None):
    return var(a, dim, correction=correction, keepdim=keepdim, unbiased=unbiased, axis=axis,
               keepdims=keepdims, ddof=ddof).sqrt()


def amax(a: Tensor, dim: Dim = None, keepdim: bool = False, *, axis=None, keepdims=False):
    dim, keepdim = _resolve(dim, keepdim, axis, keepdims)
    return AMax.apply(a, dims=normalize_dims(dim, a.ndim), keepdim=keepdim, largest=True)


def amin(a: Tensor, dim: Dim = None, keepdim: bool = False, *, axis=None, keepdims=False):
    dim, keepdim = _resolve(dim, keepdim, axis, keepdims)
    return AMax.apply(a, dims=normalize_dims(dim, a.ndim), keepdim=keepdim, largest=False)


MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _extreme(a: Tensor, dim, keepdim, largest: bool, other=None):
    if isinstance(other, Tensor):  # max(a, b) is the elementwise maximum, as in PyTorch
        from autograd.ops.elementwise import maximum, minimum

        return maximum(a, other) if largest else minimum(a, other)
    if dim is None:
        return amax(a) if largest else amin(a)
    from autograd.ops.shape import gather

    dim = normalize_dims(dim, a.ndim)[0]
    xp = get_array_module(a.data)
    pick = xp.argmax if largest else xp.argmin
    indices = pick(a.data, axis=dim, keepdims=True)
    values = gather(a, dim, indices)
    if not keepdim:
        values, indices = values.squeeze(dim), xp.squeeze(indices, axis=dim)
    return MaxResult(values, Tensor._wrap(indices.astype(np.int64, copy=False)))


def max(a: Tensor, dim=None, keepdim: bool = False, *, axis=None, keepdims=False):
    """max over everything (a tensor), over `dim` ((values, indices), as in PyTorch), or
    the elementwise maximum with another tensor."""
    dim, keepdim = _resolve(dim, keepdim, axis, keepdims)
    if isinstance(dim, Tensor):
        return _extreme(a, None, keepdim, True, other=dim)
    return _extreme(a, dim, keepdim, True)


def min(a: Tensor, dim=None, keepdim: bool = False, *, axis=None, keepdims=False):
    dim, keepdim = _resolve(dim, keepdim, axis, keepdims)
    if isinstance(dim, Tensor):
        return _extreme(a, None, keepdim, False, other=dim)
    return _extreme(a, dim, keepdim, False)


def logsumexp(a: Tensor, dim: Dim, keepdim: bool = False) -> Tensor:
    return LogSumExp.apply(a, dims=normalize_dims(dim, a.ndim), keepdim=keepdim)


def softmax(a: Tensor, dim: int = -1) -> Tensor:
    return Softmax.apply(a, dim=normalize_dims(dim, a.ndim)[0] if a.ndim else None)


def log_softmax(a: Tensor, dim: int = -1) -> Tensor:
    return LogSoftmax.apply(a, dim=normalize_dims(dim, a.ndim)[0] if a.ndim else None)


def _arg(name: str):
    def arg(a: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
        xp = get_array_module(a.data)
        pick = getattr(xp, name)
        if dim is None:  # the index into the flattened tensor
            return Tensor._wrap(xp.asarray(pick(a.data), dtype=np.int64))
        dim = normalize_dims(dim, a.ndim)[0]
        return Tensor._wrap(pick(a.data, axis=dim, keepdims=keepdim).astype(np.int64,
                                                                           copy=False))

    arg.__name__ = name
    arg.__doc__ = (f"Index of the {name[3:]}imum (an int64 tensor without gradient, on the "
                   "tensor's device).")
    return arg


argmax = _arg("argmax")
argmin = _arg("argmin")
