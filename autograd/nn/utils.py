"""Gradient utilities."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from autograd.backend import array_module, device_of, get_array_module, to_device
from autograd.tensor import Tensor


def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so their joint norm is at most `max_norm`; returns the
    norm before clipping, a 0-d tensor on the gradients' device (PyTorch's rule: multiply
    by min(1, max_norm / (norm + 1e-6))). The norm is accumulated in float64.

    On a GPU the norm and the factor stay on the device (no copy to the host) and the
    factor is multiplied in unconditionally, as PyTorch does; `error_if_nonfinite=True`
    reads the norm back (a synchronisation). Gradients on several devices are combined on
    the first one's device."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return Tensor(np.zeros((), np.float32))
    if all(type(g) is np.ndarray for g in grads):
        return _clip_on_host(params, grads, max_norm, norm_type, error_if_nonfinite)
    target = device_of(grads[0])
    xp = array_module(target)
    if norm_type == math.inf:
        norms = [to_device(get_array_module(g).abs(g).max(), target) for g in grads]
        total = xp.stack([n.astype(np.float64) for n in norms]).max()
    else:
        total = 0
        for g in grads:
            power = (get_array_module(g).abs(g.astype(np.float64)) ** norm_type).sum()
            total = total + to_device(power, target)
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"the total gradient norm is {float(total)}: cannot clip gradients")
    factor = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for p in params:
        if p.grad is not None:
            g = p.grad.data
            p.grad.data = g * to_device(factor, device_of(g)).astype(g.dtype)
    return Tensor(total.astype(grads[0].dtype))


def _clip_on_host(params: list[Tensor], grads: list[np.ndarray], max_norm: float,
                  norm_type: float, error_if_nonfinite: bool) -> Tensor:
    """NumPy gradients: the norm as a Python float, and no pass over them unless clipped."""
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
