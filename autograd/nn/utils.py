"""Gradient utilities."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from autograd.tensor import Tensor


def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so their joint norm is at most `max_norm`; returns the
    norm before clipping (PyTorch's rule: scale by max_norm / (norm + 1e-6) when above)."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return Tensor(np.zeros((), np.float32))
    if norm_type == math.inf:
        total = max(float(np.max(np.abs(g))) for g in grads)
    else:
        total = float(sum(np.sum(np.abs(g.astype(np.float64)) ** norm_type) for g in grads)
                      ) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total gradient norm is {total}: cannot clip gradients")
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for p in params:
            if p.grad is not None:
                p.grad.data = p.grad.data * np.asarray(scale, dtype=p.grad.dtype)
    return Tensor(np.asarray(total, dtype=grads[0].dtype))
