"""One Adam / AdamW step on one parameter's arrays, in place: the reference written once
against the array module (PyTorch's exact order of operations; what the CPU runs, and the
simulated GPU), and a fused CUDA kernel (`cuda/adam.cu`: the whole update in one pass
instead of a dozen element-wise kernels) that gives the same numbers on a GPU.

    g = -grad (maximize) or grad;  p *= 1 - lr wd (AdamW)  or  g = g + wd p (Adam)
    m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2;  v_max = max(v_max, v) (amsgrad)
    p = p - lr / (1 - b1^t) * m / (sqrt(v or v_max) / sqrt(1 - b2^t) + eps)

The step count and the bias corrections are Python numbers: nothing is read back from the
device.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from autograd.backend import get_array_module
from autograd.kernels import registry


class AdamSettings(NamedTuple):
    """One parameter group's settings and the step number t (1 at the first step)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool  # AdamW's decay of the weights, else Adam's L2 term in the gradient
    amsgrad: bool
    maximize: bool
    step: int


def adam_step_reference(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
                        s: AdamSettings) -> None:
    """Update param, exp_avg, exp_avg_sq (and max_exp_avg_sq with amsgrad) in place."""
    xp = get_array_module(param)
    grad = -grad if s.maximize else grad
    if s.weight_decay and s.decoupled:
        param *= 1 - s.lr * s.weight_decay
    elif s.weight_decay:
        grad = grad + s.weight_decay * param
    exp_avg += (grad - exp_avg) * (1 - s.beta1)  # lerp, as torch.lerp_
    exp_avg_sq *= s.beta2
    exp_avg_sq += (1 - s.beta2) * grad * grad
    bias_correction2_sqrt = (1 - s.beta2**s.step) ** 0.5
    if s.amsgrad:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    else:
        second = exp_avg_sq
    denom = xp.sqrt(second) / bias_correction2_sqrt + s.eps
    step_size = s.lr / (1 - s.beta1**s.step)
    param -= step_size * exp_avg / denom  # torch's addcdiv order


def _adam_step_cuda(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
                    s: AdamSettings) -> None:
    from autograd.kernels.cuda import THREADS, blocks, kernel

    xp = get_array_module(param)
    real = param.dtype.type  # the kernel's REAL scalars: what NumPy rounds Python floats to
    grad = xp.ascontiguousarray(grad)
    decay_mode = 0 if not s.weight_decay else 2 if s.decoupled else 1
    function = kernel("adam.cu", "adam_step", param.dtype)
    function((blocks(param.size),), (THREADS,), (
        param, grad, exp_avg, exp_avg_sq,
        exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq, np.int64(param.size),
        real(1 - s.lr * s.weight_decay), real(s.weight_decay), real(1 - s.beta1),
        real(s.beta2), real(1 - s.beta2), real(s.lr / (1 - s.beta1**s.step)),
        real((1 - s.beta2**s.step) ** 0.5), real(s.eps),
        np.int32(decay_mode), np.int32(s.amsgrad), np.int32(s.maximize)))


def _fits_kernel(param, grad, *state) -> bool:
    """The kernel updates flat arrays of one float dtype in place: every array in C order
    (grad is made contiguous) and of param's dtype."""
    if param.dtype not in (np.float32, np.float64) or grad.dtype != param.dtype or \
            grad.shape != param.shape:
        return False
    return all(a.flags.c_contiguous and a.dtype == param.dtype and a.shape == param.shape
               for a in (param, *state) if a is not None)


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, settings: AdamSettings
              ) -> None:
    """One Adam step on a parameter's arrays, in place (max_exp_avg_sq: None unless
    amsgrad). CPU: the reference (NumPy); GPU: the fused kernel where the arrays fit it."""
    fast = registry.lookup("adam_step", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    step = adam_step_reference if fast is None else fast
    step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, settings)


registry.register("adam_step", "cuda", supports=_fits_kernel)(_adam_step_cuda)
