"""Stochastic gradient descent with momentum, Nesterov and weight decay (PyTorch's rule)."""

from __future__ import annotations

from autograd.optim.optimizer import Optimizer, check_setting


class SGD(Optimizer):
    """g = grad + wd p;  b = mu b + (1 - dampening) g (b = g at the first step);
    g = g + mu b (nesterov) or b;  p = p - lr g."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, maximize: bool = False) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay)):
            check_setting("SGD", name, value)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def step(self) -> None:
        for group in self.param_groups:
            momentum = group["momentum"]
            for p, grad, state in self._params_with_grad(group):
                grad = -grad if group["maximize"] else grad
                if group["weight_decay"]:
                    grad = grad + group["weight_decay"] * p.data
                if momentum:
                    buffer = state.get("momentum_buffer")
                    if buffer is None:
                        buffer = grad.copy()
                    else:
                        buffer = momentum * buffer + (1 - group["dampening"]) * grad
                    state["momentum_buffer"] = buffer
                    grad = grad + momentum * buffer if group["nesterov"] else buffer
                p.data -= group["lr"] * grad
