"""Scaled dot-product attention, one fused op: softmax(q k^T * scale + mask) v, with
PyTorch's signature and mask conventions.

Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev); the leading dims
(batch, heads, ...) broadcast. A boolean mask is True where a query may attend; a float
mask is added to the scores (and gets a gradient). A query row that may attend to nothing
(its mask all False, or all -inf) outputs zeros and passes back zero gradient; PyTorch's
math kernel gives NaN there.
"""

from __future__ import annotations

import math

import numpy as np

from autograd.backend import get_array_module, is_floating, to_device
from autograd.function import Function
from autograd.ops.elementwise import as_tensors
from autograd.ops.reduction import softmax_backward, softmax_forward
from autograd.random import dropout_keep_mask
from autograd.tensor import Tensor


def _swap(a):
    return a.swapaxes(-1, -2)


class ScaledDotProductAttention(Function):
    """`allowed` (bool) and `keep` (dropout's scaled keep mask) are arrays on the device of
    q, k and v, or None."""

    def __init__(self, scale: float, allowed=None, keep=None) -> None:
        self.scale, self.allowed, self.keep = scale, allowed, keep

    def forward(self, q, k, v, additive_mask=None):
        scores = q @ _swap(k)
        scores *= scores.dtype.type(self.scale)  # a NumPy scalar: no promotion, any device
        if additive_mask is not None:
            scores = scores + additive_mask
        if self.allowed is not None:
            xp = get_array_module(scores)
            scores = xp.where(self.allowed, scores, scores.dtype.type(-np.inf))
        probs = softmax_forward(scores, empty_row_value=0.0)  # an empty row attends to none
        weights = probs if self.keep is None else probs * self.keep
        self.save_for_backward(q, k, v, probs)
        return weights @ v

    def backward(self, grad):
        # S = q k^T s + m, P = softmax(S), out = (P * keep) v:  dv = (P keep)^T g,
        # dP = (g v^T) keep, dS = softmax'(dP) (also dm), dq = dS k s, dk = dS^T q s
        q, k, v, probs = self.saved
        weights = probs if self.keep is None else probs * self.keep
        grad_v = _swap(weights) @ grad if self.needs_input_grad[2] else None
        grad_weights = grad @ _swap(v)
        grad_probs = grad_weights if self.keep is None else grad_weights * self.keep
        grad_scores = softmax_backward(grad_probs, probs)  # also the float mask's gradient
        scale = grad_scores.dtype.type(self.scale)
        grad_q = (grad_scores @ k) * scale if self.needs_input_grad[0] else None
        grad_k = (_swap(grad_scores) @ q) * scale if self.needs_input_grad[1] else None
        return grad_q, grad_k, grad_v, grad_scores


def _check_shapes(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, ...]:
    """The scores' shape (..., L, S), after checking that q, k and v fit together."""
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"scaled_dot_product_attention needs q, k, v with at least 2 dims "
                         f"(..., tokens, features), got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: q has {q.shape[-1]} features per "
                         f"token, k has {k.shape[-1]} (shapes {q.shape}, {k.shape})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: k has {k.shape[-2]} tokens, v has "
                         f"{v.shape[-2]} (shapes {k.shape}, {v.shape})")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: batch dims of q {q.shape}, "
                         f"k {k.shape}, v {v.shape} do not broadcast") from None
    return batch + (q.shape[-2], k.shape[-2])


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None,
                                 generator: np.random.Generator | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v; q (..., L, E), k (..., S, E), v (..., S, Ev).

    attn_mask: broadcastable to (..., L, S); bool (True = may attend) or float (added).
    is_causal: query i attends to keys j <= i (top-left aligned, as PyTorch).
    scale: defaults to 1 / sqrt(E). dropout_p: dropout on the attention weights, drawn
    from `generator` (else autograd's default generator)."""
    q, k, v = as_tensors(q, k, v)
    if not is_floating(q.dtype):
        raise TypeError(f"scaled_dot_product_attention needs floating q, k, v, got {q.dtype}")
    scores_shape = _check_shapes(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    allowed, additive = None, None
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: pass attn_mask or is_causal, "
                             "not both")
        allowed = np.tril(np.ones(scores_shape[-2:], dtype=bool))
    elif attn_mask is not None:
        if isinstance(attn_mask, Tensor):
            if attn_mask.device != q.device:
                raise RuntimeError(f"scaled_dot_product_attention: attn_mask is on "
                                   f"{attn_mask.device} but q is on {q.device}: move it with "
                                   ".to(device)")
            mask = attn_mask.data
        else:  # a constant: a NumPy or CuPy array, or nested lists
            mask = attn_mask if hasattr(attn_mask, "dtype") else np.asarray(attn_mask)
        mask_dtype, mask_shape = mask.dtype, tuple(mask.shape)
        try:
            fits = np.broadcast_shapes(mask_shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {mask_shape} "
                             f"does not broadcast to the scores' shape {scores_shape}")
        if mask_dtype == np.bool_:
            allowed = mask
        elif is_floating(mask_dtype):
            if isinstance(attn_mask, Tensor) and attn_mask.dtype != q.dtype:
                raise TypeError(f"scaled_dot_product_attention: attn_mask is {attn_mask.dtype}"
                                f" but q is {q.dtype}")
            additive = as_tensors(q, attn_mask)[1]
        else:
            raise TypeError(f"attn_mask must be bool or float, got dtype {mask_dtype}")
    if allowed is not None:
        allowed = to_device(allowed, q.device)
    keep = None
    if dropout_p > 0.0:  # drawn on the host, so a seed gives the same mask on every device
        keep = dropout_keep_mask(scores_shape, dropout_p, q.dtype, generator, q.device)
    inputs = (q, k, v) if additive is None else (q, k, v, additive)
    return ScaledDotProductAttention.apply(*inputs, scale=scale, allowed=allowed, keep=keep)
