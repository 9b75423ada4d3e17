"""Exponential moving average of parameters, in the form of diffusers' `EMAModel`.

decay(step) = min(max_decay, 1 - (1 + step / inv_gamma) ** -power) with warm-up, else
min(max_decay, (1 + step) / (10 + step)); shadow = shadow - (1 - decay) (shadow - param).

The shadow arrays live on their parameters' device, in their dtype, and follow them: after
`Module.to(device)` they move at the next `step` or `copy_to`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from autograd.backend import Device, to_device
from autograd.grad_mode import no_grad
from autograd.optim.optimizer import copied_onto, follow, is_array
from autograd.tensor import Tensor


class EMAModel:
    """Keeps a shadow copy of parameters; `copy_to` puts the averages in the model,
    `store`/`restore` (or the `average_parameters` context) swap them in for evaluation."""

    def __init__(self, parameters: Iterable[Tensor], decay: float = 0.9999,
                 min_decay: float = 0.0, update_after_step: int = 0,
                 use_ema_warmup: bool = False, inv_gamma: float = 1.0,
                 power: float = 2 / 3) -> None:
        self.shadow_params = [p.data.copy() for p in parameters]
        self.decay, self.min_decay = decay, min_decay
        self.update_after_step = update_after_step
        self.use_ema_warmup, self.inv_gamma, self.power = use_ema_warmup, inv_gamma, power
        self.optimization_step = 0
        self.cur_decay_value: float | None = None
        self.collected_params: list | None = None  # arrays saved by store()

    def get_decay(self, optimization_step: int) -> float:
        step = max(0, optimization_step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        if self.use_ema_warmup:
            value = 1 - (1 + step / self.inv_gamma) ** -self.power
        else:
            value = (1 + step) / (10 + step)
        return max(min(value, self.decay), self.min_decay)

    def step(self, parameters: Iterable[Tensor]) -> None:
        """Move the averages towards the current parameters (call after optimizer.step)."""
        parameters = list(parameters)
        self._check(parameters)
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        self.cur_decay_value = decay
        self._follow(parameters)
        for shadow, p in zip(self.shadow_params, parameters):
            if p.requires_grad:
                shadow -= (1 - decay) * (shadow - p.data)
            else:
                shadow[...] = p.data

    def copy_to(self, parameters: Iterable[Tensor]) -> None:
        parameters = list(parameters)
        self._check(parameters)
        self._follow(parameters)
        with no_grad():
            for shadow, p in zip(self.shadow_params, parameters):
                p.copy_(shadow)

    def store(self, parameters: Iterable[Tensor]) -> None:
        self.collected_params = [p.data.copy() for p in parameters]

    def restore(self, parameters: Iterable[Tensor]) -> None:
        if self.collected_params is None:
            raise RuntimeError("restore() without a preceding store()")
        with no_grad():
            for saved, p in zip(self.collected_params, parameters):
                p.copy_(saved)
        self.collected_params = None

    @contextlib.contextmanager
    def average_parameters(self, parameters: Iterable[Tensor]) -> Iterator[None]:
        """Within the block the parameters hold the averages; restored after."""
        parameters = list(parameters)
        self.store(parameters)
        self.copy_to(parameters)
        try:
            yield
        finally:
            self.restore(parameters)

    def to(self, device: str | Device | None = None, dtype=None) -> EMAModel:
        """Move the shadow arrays (diffusers' method); `step` moves them back to the
        parameters' device and dtype if those differ."""
        self.shadow_params = [
            (s if device is None else to_device(s, device)).astype(dtype or s.dtype,
                                                                  copy=False)
            for s in self.shadow_params]
        return self

    def _follow(self, parameters: list[Tensor]) -> None:
        self.shadow_params = [follow(s, p.data) for s, p in zip(self.shadow_params, parameters)]

    def _check(self, parameters: list[Tensor]) -> None:
        if len(parameters) != len(self.shadow_params):
            raise ValueError(f"EMA holds {len(self.shadow_params)} parameters, got "
                             f"{len(parameters)}")
        for shadow, p in zip(self.shadow_params, parameters):
            if shadow.shape != p.shape:
                raise ValueError(f"EMA parameter shape {shadow.shape} != {p.shape}")

    def state_dict(self) -> dict:
        """Settings and copies of the shadow arrays, on their device (as the optimizer's:
        `autograd.save` copies them to the host)."""
        return {
            "decay": self.decay, "min_decay": self.min_decay,
            "optimization_step": self.optimization_step,
            "update_after_step": self.update_after_step,
            "use_ema_warmup": self.use_ema_warmup, "inv_gamma": self.inv_gamma,
            "power": self.power, "shadow_params": [s.copy() for s in self.shadow_params],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore settings and averages; shadow arrays (NumPy or CuPy arrays, or tensors,
        on any device) are copied onto this EMA's device, in its dtype."""
        shadows = [s.data if isinstance(s, Tensor) else s for s in state_dict["shadow_params"]]
        shapes = [tuple(s.shape) if is_array(s) else None for s in shadows]
        if shapes != [s.shape for s in self.shadow_params]:
            raise ValueError("EMA state_dict's parameter shapes differ from this model's: "
                             f"{shapes} != {[s.shape for s in self.shadow_params]}")
        self.shadow_params = [copied_onto(s, own) for s, own in zip(shadows, self.shadow_params)]
        for key in ("decay", "min_decay", "optimization_step", "update_after_step",
                    "use_ema_warmup", "inv_gamma", "power"):
            setattr(self, key, state_dict[key])
