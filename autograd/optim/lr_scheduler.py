"""Learning-rate schedules: `LambdaLR` and linear warm-up followed by cosine decay or a
constant rate (the schedules diffusers' training scripts use)."""

from __future__ import annotations

import math
from collections.abc import Callable

from autograd.optim.optimizer import Optimizer


class LRScheduler:
    """Sets each group's lr from its initial lr and the step count; call `step()` after
    `optimizer.step()`."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = list(state_dict["base_lrs"])
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(step)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float],
                 last_epoch: int = -1) -> None:
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * self.lr_lambda(self.last_epoch) for base in self.base_lrs]


def warmup_factor(step: int, num_warmup_steps: int) -> float:
    return step / max(1, num_warmup_steps)


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int,
                                      last_epoch: int = -1) -> LambdaLR:
    """Linear warm-up from 0 to the initial lr over `num_warmup_steps`, then constant."""
    def factor(step: int) -> float:
        return warmup_factor(step, num_warmup_steps) if step < num_warmup_steps else 1.0

    return LambdaLR(optimizer, factor, last_epoch)


def get_cosine_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int,
                                    num_training_steps: int, num_cycles: float = 0.5,
                                    last_epoch: int = -1) -> LambdaLR:
    """Linear warm-up, then cosine decay to 0 at `num_training_steps` (diffusers' form)."""
    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return warmup_factor(step, num_warmup_steps)
        progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))

    return LambdaLR(optimizer, factor, last_epoch)
