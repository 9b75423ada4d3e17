"""Normalisation ops: group_norm, layer_norm and batch_norm, with PyTorch's semantics.

All three normalise groups of values by their mean and biased variance, then scale and
shift per channel (`_GroupedNorm` holds the math, forward and backward); they differ only in
which values form a group. Each maps its input onto one (N, C, M) layout, that of the fused
group-norm kernels registered beneath them (`autograd.kernels.norm`):

    group_norm  (N, C, *)          -> (N, C, M),        G groups of C // G channels
    layer_norm  (*, *normalized)   -> (rows, D, 1),     1 group per row, D affine features
    batch_norm  (N, C, *), train   -> (1, C, N * M),    C groups of one channel

Variance 0 (a constant group) gives xhat = 0 * rsqrt(eps) = 0 and a finite gradient.
The same code runs on every device (numba or CUDA fast paths where registered, else the math).
"""

from __future__ import annotations

import math

import numpy as np

from autograd.backend import device_of, get_array_module, is_floating
from autograd.function import Function
from autograd.kernels import registry
from autograd.ops.elementwise import as_tensors, sigmoid_array
from autograd.tensor import Tensor


def _statistics(x, num_groups: int, eps: float):
    """x (N, C, M) -> mean and rstd = 1 / sqrt(biased var + eps) of each (n, g) group of
    C // G channels, (N, G) in float64."""
    groups = x.reshape(x.shape[0], num_groups, -1).astype(np.float64)
    return groups.mean(axis=2), 1.0 / get_array_module(x).sqrt(groups.var(axis=2) + eps)


def _normalized(x, mean, rstd):
    """xhat = (x - mean) * rstd, each value with its group's statistics: (N, C, M) float64."""
    n, c, m = x.shape
    groups = x.reshape(n, mean.shape[1], -1).astype(np.float64)
    return ((groups - mean[:, :, None]) * rstd[:, :, None]).reshape(n, c, m)


class _GroupedNorm(Function):
    """Normalise groups of the (N, C, M) layout, then scale and shift per channel:

        xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = xhat * weight + bias

    Subclasses say how x maps onto that layout. The statistics are float64 whatever x's
    dtype; the fast path (`fast_path`, `fast_path + "_backward"` in the kernel registry)
    computes the same in one fused pass over x."""

    fast_path = "group_norm"

    def __init__(self, num_groups: int, eps: float) -> None:
        self.num_groups, self.eps = num_groups, eps

    def to_layout(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def from_layout(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x, weight, bias):
        x3, w, b = self.to_layout(x), weight.reshape(-1), bias.reshape(-1)
        fast = registry.lookup(self.fast_path, x3)
        if fast is not None:
            y, mean, rstd = fast(x3, w, b, self.num_groups, self.eps)
        else:
            y, mean, rstd = self.math_forward(x3, w, b)
        self.save_for_backward(x, weight, bias, mean, rstd)
        return self.from_layout(y, x.shape)

    def backward(self, grad):
        x, weight, bias, mean, rstd = self.saved
        x3, grad3, w, b = self.to_layout(x), self.to_layout(grad), weight.reshape(-1), \
            bias.reshape(-1)
        fast = registry.lookup(self.fast_path + "_backward", x3)
        if fast is not None:
            grad_x, grad_weight, grad_bias = fast(grad3, x3, mean, rstd, w, b, self.num_groups)
        else:
            grad_x, grad_weight, grad_bias = self.math_backward(grad3, x3, mean, rstd, w, b)
        return (
            self.from_layout(grad_x, x.shape) if self.needs_input_grad[0] else None,
            grad_weight.reshape(weight.shape) if self.needs_input_grad[1] else None,
            grad_bias.reshape(weight.shape) if self.needs_input_grad[2] else None,
        )

    def math_forward(self, x, weight, bias):
        """x (N, C, M), weight, bias (C,) -> (y (N, C, M), mean (N, G), rstd (N, G))."""
        mean, rstd = _statistics(x, self.num_groups, self.eps)
        y = _normalized(x, mean, rstd) * weight[:, None] + bias[:, None]
        return y.astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)

    def math_backward(self, grad, x, mean, rstd, weight, bias):
        """(dx, dweight, dbias) of y = xhat * w + b: dw = sum(dy xhat), db = sum(dy), and
        with dxhat = dy w, over each group of K values (the mean and var depend on x too):
            dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))"""
        n, c, m = x.shape
        dy, xhat = grad.astype(np.float64), _normalized(x, mean, rstd)
        dxhat = (dy * weight[:, None]).reshape(n, self.num_groups, -1)
        xhat_groups = xhat.reshape(dxhat.shape)
        dx = rstd[:, :, None] * (dxhat - dxhat.mean(axis=2, keepdims=True)
                                 - xhat_groups * (dxhat * xhat_groups).mean(axis=2, keepdims=True))
        return (dx.reshape(n, c, m).astype(x.dtype), (dy * xhat).sum(axis=(0, 2)).astype(x.dtype),
                dy.sum(axis=(0, 2)).astype(x.dtype))


class GroupNorm(_GroupedNorm):
    def to_layout(self, a):  # (N, C, *) -> (N, C, M)
        return a.reshape(a.shape[0], a.shape[1], -1)

    def from_layout(self, a, shape):
        return a.reshape(shape)


class GroupNormSiLU(GroupNorm):
    """silu(group_norm(x)), the UNet's every GroupNorm -> SiLU; its fast path is one fused
    pass each way, recomputing y in backward rather than saving it."""

    fast_path = "group_norm_silu"

    def math_forward(self, x, weight, bias):  # silu(y) = y sigmoid(y)
        y, mean, rstd = super().math_forward(x, weight, bias)
        return y * sigmoid_array(y), mean, rstd

    def math_backward(self, grad, x, mean, rstd, weight, bias):
        # d silu(y) = s (1 + y (1 - s)) dy, s = sigmoid(y), y recomputed from x; then the norm's
        y = _normalized(x, mean, rstd) * weight[:, None] + bias[:, None]
        s = sigmoid_array(y)
        dy = (grad * s * (1 + y * (1 - s))).astype(x.dtype)
        return super().math_backward(dy, x, mean, rstd, weight, bias)


class LayerNorm(_GroupedNorm):
    def __init__(self, features: int, eps: float) -> None:
        super().__init__(1, eps)
        self.features = features

    def to_layout(self, a):  # (*, *normalized) -> (rows, D, 1)
        return a.reshape(-1, self.features, 1)

    def from_layout(self, a, shape):
        return a.reshape(shape)


class BatchNorm(_GroupedNorm):
    def to_layout(self, a):  # (N, C, *) -> (1, C, N * M): each channel is one group
        n, c = a.shape[:2]
        xp = get_array_module(a)
        return xp.ascontiguousarray(a.reshape(n, c, -1).transpose(1, 0, 2)).reshape(1, c, -1)

    def from_layout(self, a, shape):
        n, c = shape[:2]
        return a.reshape(c, n, -1).transpose(1, 0, 2).reshape(shape)


# ---- public functions ---------------------------------------------------------------------


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...],
            what: str) -> tuple[Tensor, Tensor, Tensor]:
    """x, weight and bias as tensors of x's float dtype; ones and zeros (on x's device)
    stand in for None."""
    if not is_floating(x.dtype):
        raise TypeError(f"{what}: input must be floating point, got dtype {x.dtype}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and tuple(param.shape) != shape:
            raise ValueError(f"{what}: {name} has shape {tuple(param.shape)}, expected {shape}")
    xp = get_array_module(x.data)
    weight = Tensor._wrap(xp.ones(shape, x.dtype)) if weight is None else weight
    bias = Tensor._wrap(xp.zeros(shape, x.dtype)) if bias is None else bias
    return as_tensors(x, weight, bias)


def _check_groups(x: Tensor, num_groups: int, what: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{what} expects input of shape (N, C, *), got {x.shape}")
    channels = x.shape[1]
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(f"{what}: {channels} channels are not divisible into "
                         f"{num_groups} groups")


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """x: (N, C, *) normalised over each group of C // num_groups channels (and all
    positions); weight, bias: (C,)."""
    _check_groups(x, num_groups, "group_norm")
    x, weight, bias = _affine(x, weight, bias, (x.shape[1],), "group_norm")
    return GroupNorm.apply(x, weight, bias, num_groups=num_groups, eps=eps)


def group_norm_silu(x: Tensor, num_groups: int, weight: Tensor | None = None,
                    bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """silu(group_norm(x, num_groups, weight, bias, eps)), in one fused kernel pass forward
    and backward where there is one (the UNet's every GroupNorm -> SiLU); shapes as
    group_norm."""
    _check_groups(x, num_groups, "group_norm_silu")
    x, weight, bias = _affine(x, weight, bias, (x.shape[1],), "group_norm_silu")
    return GroupNormSiLU.apply(x, weight, bias, num_groups=num_groups, eps=eps)


def layer_norm(x: Tensor, normalized_shape: int | tuple[int, ...],
               weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """x: (*, *normalized_shape) normalised over its last len(normalized_shape) dims;
    weight, bias: normalized_shape."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or len(shape) > x.ndim or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: input of shape {x.shape} does not end with "
                         f"normalized_shape {shape}")
    x, weight, bias = _affine(x, weight, bias, shape, "layer_norm")
    return LayerNorm.apply(x, weight, bias, features=math.prod(shape), eps=eps)


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """x: (N, C, *). Training normalises with the batch's statistics per channel and, when
    running stats are given, updates them in place: mean and the unbiased variance, blended
    with `momentum` (nn.BatchNorm passes 1 / batches seen for a cumulative average).
    Evaluation normalises with the running statistics."""
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C, *), got {x.shape}")
    channels = x.shape[1]
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is not None and tuple(stat.shape) != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(stat.shape)}, expected "
                             f"({channels},)")
        if stat is not None and device_of(stat.data) != device_of(x.data):
            raise RuntimeError(f"batch_norm: {name} is on {device_of(stat.data)} but the "
                               f"input is on {device_of(x.data)}: move them to one device")
    x, weight, bias = _affine(x, weight, bias, (channels,), "batch_norm")
    if training:
        count = x.data.size // channels
        if count <= 1:
            raise ValueError(f"batch_norm needs more than 1 value per channel when training, "
                             f"got input of shape {x.shape}")
        if running_mean is not None and running_var is not None:
            _update_running_stats(x.data, running_mean, running_var, momentum)
        return BatchNorm.apply(x, weight, bias, num_groups=channels, eps=eps)
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm in evaluation mode needs running_mean and running_var")
    # y = x * (w / sqrt(rv + eps)) + (b - rm * w / sqrt(rv + eps)), per channel
    xp = get_array_module(x.data)
    inverse_std = 1.0 / xp.sqrt(running_var.data.astype(x.dtype) + eps)
    broadcast = (channels,) + (1,) * (x.ndim - 2)
    scale = (weight * inverse_std).reshape(broadcast)
    shift = (bias - running_mean.data.astype(x.dtype) * (weight * inverse_std)).reshape(broadcast)
    return x * scale + shift


def _update_running_stats(x: np.ndarray, running_mean: Tensor, running_var: Tensor,
                          momentum: float) -> None:
    """running = (1 - momentum) running + momentum batch, with the unbiased batch variance."""
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64)
    unbiased_var = x.var(axis=axes, dtype=np.float64, ddof=1)
    running_mean.copy_((1 - momentum) * running_mean.data + momentum * mean)
    running_var.copy_((1 - momentum) * running_var.data + momentum * unbiased_var)
