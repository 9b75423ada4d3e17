"""Adam and AdamW, with PyTorch's exact update (bias correction; AdamW's decoupled decay)."""

from __future__ import annotations

from autograd.backend import get_array_module
from autograd.kernels.adam import AdamSettings, adam_step
from autograd.optim.optimizer import Optimizer, check_setting


class Adam(Optimizer):
    """m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    Adam adds weight decay to the gradient (L2); AdamW decays the weights directly."""

    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        owner = type(self).__name__
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            check_setting(owner, name, value)
        if len(tuple(betas)) != 2:
            raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        for k, beta in enumerate(betas):
            check_setting(owner, f"betas[{k}]", beta, high=1.0)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def step(self) -> None:
        """One update of every parameter with a gradient: on a GPU one fused kernel per
        parameter (`kernels/adam.py`), with the step count and bias corrections as Python
        numbers (no device-to-host copy)."""
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p, grad, state in self._params_with_grad(group):
                xp = get_array_module(p.data)
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = xp.zeros_like(p.data)
                    state["exp_avg_sq"] = xp.zeros_like(p.data)
                if group["amsgrad"] and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = xp.zeros_like(p.data)
                state["step"] += 1
                settings = AdamSettings(lr, beta1, beta2, eps, group["weight_decay"],
                                        self.decoupled_weight_decay, group["amsgrad"],
                                        group["maximize"], state["step"])
                adam_step(p.data, grad, state["exp_avg"], state["exp_avg_sq"],
                          state["max_exp_avg_sq"] if group["amsgrad"] else None, settings)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): p *= 1 - lr * wd first."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
