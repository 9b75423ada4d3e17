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

from autograd.backend import is_floating
from autograd.function import Function
from autograd.kernels.softmax import softmax_backward, softmax_forward
from autograd.ops.elementwise import as_tensors
from autograd.random import dropout_keep_mask
from autograd.tensor import Tensor


def _swap(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


class ScaledDotProductAttention(Function):
    def __init__(self, scale: float, allowed: np.ndarray | None,
                 keep: np.ndarray | None) -> None:
        self.scale, self.allowed, self.keep = scale, allowed, keep

    def forward(self, q, k, v, additive_mask=None):
        scores = np.matmul(q, _swap(k))
        scores *= np.asarray(self.scale, scores.dtype)
        if additive_mask is not None:
            scores = scores + additive_mask
        if self.allowed is not None:
            scores = np.where(self.allowed, scores, np.asarray(-np.inf, scores.dtype))
        probs = softmax_forward(scores)
        weights = probs if self.keep is None else probs * self.keep
        self.save_for_backward(q, k, v, probs)
        return np.matmul(weights, v)

    def backward(self, grad):  # P = softmax(q k^T s + m), out = P v
        q, k, v, probs = self.saved
        weights = probs if self.keep is None else probs * self.keep
        grad_v = np.matmul(_swap(weights), grad) if self.needs_input_grad[2] else None
        grad_weights = np.matmul(grad, _swap(v))
        grad_probs = grad_weights if self.keep is None else grad_weights * self.keep
        grad_scores = softmax_backward(grad_probs, probs)  # also the float mask's gradient
        scale = np.asarray(self.scale, grad_scores.dtype)
        grad_q = np.matmul(grad_scores, k) * scale if self.needs_input_grad[0] else None
        grad_k = np.matmul(_swap(grad_scores), q) * scale if self.needs_input_grad[1] else None
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
        mask_dtype = attn_mask.dtype if isinstance(attn_mask, Tensor) else \
            np.asarray(attn_mask).dtype
        mask_shape = np.shape(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask)
        try:
            fits = np.broadcast_shapes(mask_shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {mask_shape} "
                             f"does not broadcast to the scores' shape {scores_shape}")
        if mask_dtype == np.bool_:
            allowed = np.asarray(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask)
        elif is_floating(mask_dtype):
            if isinstance(attn_mask, Tensor) and attn_mask.dtype != q.dtype:
                raise TypeError(f"scaled_dot_product_attention: attn_mask is {attn_mask.dtype}"
                                f" but q is {q.dtype}")
            additive = as_tensors(q, attn_mask)[1]
        else:
            raise TypeError(f"attn_mask must be bool or float, got dtype {mask_dtype}")
    keep = None
    if dropout_p > 0.0:
        keep = dropout_keep_mask(scores_shape, dropout_p, q.dtype, generator)
    inputs = (q, k, v) if additive is None else (q, k, v, additive)
    return ScaledDotProductAttention.apply(*inputs, scale=scale, allowed=allowed, keep=keep)
