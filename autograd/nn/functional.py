"""`autograd.nn.functional` (import as F): layers as functions, PyTorch's signatures.

Targets given as NumPy arrays go to the input's device; class ids are range-checked where
they are on the host (ids already on a GPU are not: that would copy them back)."""

from __future__ import annotations

import numpy as np

from autograd import ops
from autograd.backend import get_array_module, is_cupy_array, to_device
from autograd.nn.dropout import dropout
from autograd.nn.embedding import embedding
from autograd.ops import gelu, log_softmax, pad, relu, sigmoid, silu, softmax, tanh
from autograd.ops.attention import scaled_dot_product_attention
from autograd.ops.conv import conv2d, conv_transpose2d
from autograd.ops.norm import batch_norm, group_norm, group_norm_silu, layer_norm
from autograd.ops.pooling import avg_pool2d, interpolate, max_pool2d
from autograd.tensor import Tensor

__all__ = ["linear", "relu", "silu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax",
           "pad", "mse_loss", "cross_entropy", "nll_loss"]
__all__ += ["group_norm", "group_norm_silu", "layer_norm", "batch_norm",
            "scaled_dot_product_attention", "dropout", "embedding"]
__all__ += ["conv2d", "conv_transpose2d", "interpolate", "avg_pool2d", "max_pool2d"]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x: (*, in), weight: (out, in), bias: (out,) -> (*, out)."""
    if x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input has {x.shape[-1:]} features, weight expects "
                         f"{weight.shape[1]} (weight shape {weight.shape})")
    out = ops.matmul(x, weight.T)
    return out if bias is None else out + bias


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error; input and target must have the same shape."""
    target_shape = tuple(target.shape) if hasattr(target, "shape") else np.shape(target)
    if input.shape != target_shape:
        raise ValueError(f"mse_loss: input shape {input.shape} != target shape {target_shape}")
    diff = input - target
    return _reduce(diff * diff, reduction)


def _where_it_is(input: Tensor, value, what: str):
    """A target or mask's array where it is (a host array, or an array on the input's
    device); a tensor on another device than the input is an error that names both."""
    if isinstance(value, Tensor):
        if value.device != input.device:
            raise RuntimeError(f"the input is on {input.device} and the {what} on "
                               f"{value.device}: move it with .to(device) first")
        return value.data
    return value if is_cupy_array(value) else np.asarray(value)


def as_constant(input: Tensor, value, what: str = "target"):
    """A target or mask (tensor, array or list) as an array on the input's device: host
    arrays are copied there; a tensor on another device is an error that names both."""
    return to_device(_where_it_is(input, value, what), input.device)


def _class_targets(input: Tensor, target, ignore_index: int):
    """Class ids (N, ...) as an integer array on the input's device, and where they are not
    `ignore_index`; ids on the host are range-checked first."""
    target = _where_it_is(input, target, "target")
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"class targets must be integers, got dtype {target.dtype}")
    expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"targets of shape {target.shape} do not fit input {input.shape}: "
                         f"expected {expected}")
    keep = target != ignore_index
    if isinstance(target, np.ndarray) and np.any(keep & ((target < 0)
                                                         | (target >= input.shape[1]))):
        raise IndexError(f"class targets must lie in [0, {input.shape[1]}), got "
                         f"{target[keep].min()}..{target[keep].max()}")
    return to_device(target, input.device), to_device(keep, input.device)


def nll_loss(input: Tensor, target, weight: Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class `target` given log-probabilities input (N, C, ...)."""
    target, keep = _class_targets(input, target, ignore_index)
    xp = get_array_module(target)
    safe = xp.where(keep, target, 0)
    picked = ops.gather(input, 1, xp.expand_dims(safe, 1)).squeeze(1)
    class_weight = xp.ones(input.shape[1], input.dtype) if weight is None else weight.data
    sample_weight = class_weight[safe] * keep
    loss = -picked * sample_weight
    if reduction == "mean":
        return loss.sum() / sample_weight.sum()
    return _reduce(loss, reduction)


def cross_entropy(input: Tensor, target, weight: Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross entropy of logits input (N, C, ...) with class indices (N, ...) or class
    probabilities (N, C, ...), PyTorch's definition, label smoothing included."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    log_probs = log_softmax(input, dim=1)
    classes = input.shape[1]
    class_weight = None if weight is None else weight.data.reshape((1, classes) +
                                                                   (1,) * (input.ndim - 2))
    target_array = _where_it_is(input, target, "target")
    if np.issubdtype(target_array.dtype, np.floating):  # class probabilities
        if target_array.shape != input.shape:
            raise ValueError(f"probability targets of shape {target_array.shape} must match "
                             f"input {input.shape}")
        target_array = to_device(target_array, input.device)
        probs = target_array * (1 - label_smoothing) + label_smoothing / classes
        weighted = log_probs * probs if class_weight is None else log_probs * (probs *
                                                                              class_weight)
        return _reduce(-weighted.sum(dim=1), reduction)
    loss = nll_loss(log_probs, target_array, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return loss
    target_array, keep = _class_targets(input, target_array, ignore_index)
    spread = log_probs if class_weight is None else log_probs * class_weight
    smooth = -spread.sum(dim=1) * keep
    if reduction == "mean":
        if weight is None:
            smooth = smooth.sum() / keep.sum()
        else:  # the weights of the kept targets (a multiply, not a mask: no sync on a GPU)
            safe = get_array_module(keep).where(keep, target_array, 0)
            smooth = smooth.sum() / (weight.data[safe] * keep).sum()
    else:
        smooth = _reduce(smooth, reduction)
    return loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
