"""`autograd.nn.functional` (import as F): layers as functions, PyTorch's signatures."""

from __future__ import annotations

import numpy as np

from autograd import ops
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
    target_shape = np.shape(target.data if isinstance(target, Tensor) else target)
    if input.shape != target_shape:
        raise ValueError(f"mse_loss: input shape {input.shape} != target shape {target_shape}")
    diff = input - target
    return _reduce(diff * diff, reduction)


def _class_targets(input: Tensor, target) -> np.ndarray:
    target = np.asarray(target.data if isinstance(target, Tensor) else target)
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"class targets must be integers, got dtype {target.dtype}")
    expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"targets of shape {target.shape} do not fit input {input.shape}: "
                         f"expected {expected}")
    return target


def nll_loss(input: Tensor, target, weight: Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class `target` given log-probabilities input (N, C, ...)."""
    target = _class_targets(input, target)
    keep = target != ignore_index
    if np.any(keep & ((target < 0) | (target >= input.shape[1]))):
        raise IndexError(f"class targets must lie in [0, {input.shape[1]}), got "
                         f"{target[keep].min()}..{target[keep].max()}")
    safe = np.where(keep, target, 0)
    picked = ops.gather(input, 1, np.expand_dims(safe, 1)).squeeze(1)
    class_weight = np.ones(input.shape[1], input.dtype) if weight is None else weight.data
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
    target_array = target.data if isinstance(target, Tensor) else np.asarray(target)
    if np.issubdtype(target_array.dtype, np.floating):  # class probabilities
        if target_array.shape != input.shape:
            raise ValueError(f"probability targets of shape {target_array.shape} must match "
                             f"input {input.shape}")
        probs = target_array * (1 - label_smoothing) + label_smoothing / classes
        weighted = log_probs * probs if class_weight is None else log_probs * (probs *
                                                                              class_weight)
        return _reduce(-weighted.sum(dim=1), reduction)
    loss = nll_loss(log_probs, target_array, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return loss
    keep = _class_targets(input, target_array) != ignore_index
    spread = log_probs if class_weight is None else log_probs * class_weight
    smooth = -spread.sum(dim=1) * keep
    if reduction == "mean":
        if weight is None:
            smooth = smooth.sum() / keep.sum()
        else:
            smooth = smooth.sum() / weight.data[target_array[keep]].sum()
    else:
        smooth = _reduce(smooth, reduction)
    return loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
