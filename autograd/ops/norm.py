"""Normalisation ops: group_norm, layer_norm and batch_norm, with PyTorch's semantics.

All three normalise groups of values by their mean and biased variance, then scale and
shift per channel; they differ only in which values form a group. Each maps its input onto
the (N, C, M) layout of the fused group-norm kernel (`autograd.kernels.norm`):

    group_norm  (N, C, *)          -> (N, C, M),        G groups of C // G channels
    layer_norm  (*, *normalized)   -> (rows, D, 1),     1 group per row, D affine features
    batch_norm  (N, C, *), train   -> (1, C, N * M),    C groups of one channel

Variance 0 (a constant group) gives xhat = 0 * rsqrt(eps) = 0 and a finite gradient.
The same code runs on every device (the kernel dispatcher picks numba, CUDA or the reference).
"""

from __future__ import annotations

import math

import numpy as np

from autograd.backend import device_of, get_array_module, is_floating
from autograd.function import Function
from autograd.kernels.norm import group_norm_backward, group_norm_forward
from autograd.ops.elementwise import as_tensors
from autograd.tensor import Tensor


class _GroupedNorm(Function):
    """Normalise the kernel layout's groups; subclasses say how x maps onto that layout."""

    def __init__(self, num_groups: int, eps: float, silu: bool = False) -> None:
        self.num_groups, self.eps, self.silu = num_groups, eps, silu

    def to_layout(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def from_layout(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x, weight, bias):
        out, mean, rstd = group_norm_forward(
            self.to_layout(x), weight.reshape(-1), bias.reshape(-1), self.num_groups, self.eps,
            self.silu)
        self.save_for_backward(x, weight, bias, mean, rstd)
        return self.from_layout(out, x.shape)

    def backward(self, grad):  # dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
        x, weight, bias, mean, rstd = self.saved  # silu: dy = grad * silu'(y) first (kernel)
        grad_x, grad_weight, grad_bias = group_norm_backward(
            self.to_layout(grad), self.to_layout(x), mean, rstd,
            weight.reshape(-1), self.num_groups, bias.reshape(-1), self.silu)
        return (
            self.from_layout(grad_x, x.shape) if self.needs_input_grad[0] else None,
            grad_weight.reshape(weight.shape) if self.needs_input_grad[1] else None,
            grad_bias.reshape(weight.shape) if self.needs_input_grad[2] else None,
        )


class GroupNorm(_GroupedNorm):
    def to_layout(self, a):  # (N, C, *) -> (N, C, M)
        return a.reshape(a.shape[0], a.shape[1], -1)

    def from_layout(self, a, shape):
        return a.reshape(shape)


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
    """silu(group_norm(x, num_groups, weight, bias, eps)) in one fused kernel pass, forward
    and backward (the UNet's every GroupNorm -> SiLU); same shapes as group_norm."""
    _check_groups(x, num_groups, "group_norm_silu")
    x, weight, bias = _affine(x, weight, bias, (x.shape[1],), "group_norm_silu")
    return GroupNorm.apply(x, weight, bias, num_groups=num_groups, eps=eps, silu=True)


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
