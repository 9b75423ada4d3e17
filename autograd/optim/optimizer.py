"""`Optimizer`: parameter groups, per-parameter state, zero_grad and state_dict (PyTorch's
layout, so a run can resume exactly).

State arrays (moments, momentum buffers) live on their parameter's device, in its dtype,
and follow it: after `Module.to(device)` they move at the next `step()`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from autograd.backend import device_of, get_array_module, is_cupy_array, is_floating, to_device
from autograd.tensor import Tensor


def is_array(value: Any) -> bool:
    """A NumPy or CuPy array (not a Python number, a list or a tensor)."""
    return isinstance(value, np.ndarray) or is_cupy_array(value)


def follow(array, like):
    """`array` on `like`'s device and, when both are floating, in its dtype: itself when it
    already is (state follows its parameter)."""
    if type(array) is not np.ndarray or type(like) is not np.ndarray:
        array = to_device(array, device_of(like))
    if array.dtype != like.dtype and is_floating(array.dtype) and is_floating(like.dtype):
        array = array.astype(like.dtype)
    return array


def copied_onto(array, like):
    """A copy of `array` (on any device) on `like`'s device, in its dtype."""
    moved = to_device(array, device_of(like))
    return moved.astype(like.dtype, copy=moved is array)


def follow_state(state: dict, like) -> None:
    """Move the arrays of one parameter's state to the parameter (see `follow`)."""
    for key, value in state.items():
        if is_array(value):
            state[key] = follow(value, like)


def check_setting(owner: str, name: str, value: float, low: float = 0.0,
                  high: float = math.inf) -> None:
    """Refuse a hyperparameter that is NaN, infinite or outside [low, high) (high: inf means
    no upper bound), naming the optimizer, the setting, the value and the range expected."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and low <= number and (number < high or high == math.inf)):
        bound = f"in [{low}, {high})" if high != math.inf else f">= {low}"
        raise ValueError(f"{owner}: {name} must be a finite number {bound}, got {value!r}")


class Optimizer:
    """Base class. Subclasses implement `step()` reading `param_groups` and `state`."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict) -> None:
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for p in group["params"]:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise ValueError("optimizers can only update tensors that require grad")
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in known for p in group["params"]):
            raise ValueError("a parameter appears in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data = get_array_module(p.grad.data).zeros_like(p.grad.data)

    def step(self) -> None:
        raise NotImplementedError

    def _params_with_grad(self, group: dict):
        """(parameter, its gradient array, its state) for the parameters that have a
        gradient; the state moved to the parameter's device and dtype first."""
        for p in group["params"]:
            if p.grad is not None:
                p._version_counter.value += 1  # the update below changes p in place
                state = self.state.setdefault(p, {})
                follow_state(state, p.data)
                yield p, p.grad.data, state

    def state_dict(self) -> dict:
        """{'state': {index: {...}}, 'param_groups': [{..., 'params': [index, ...]}]}, with
        parameters numbered in group order, as PyTorch does. State arrays are copies on
        their device (CuPy arrays for a parameter on a GPU: nothing is copied to the host;
        `autograd.save` does that)."""
        index = {}
        groups = []
        for group in self.param_groups:
            numbered = {**group, "params": []}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                numbered["params"].append(index[id(p)])
            groups.append(numbered)
        state = {index[id(p)]: {k: (v.copy() if is_array(v) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": copy.deepcopy(groups)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore settings and state; state arrays (NumPy or CuPy arrays, or tensors, on
        any device) are copied onto each parameter's device, in its dtype."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, the optimizer "
                             f"has {len(self.param_groups)}")
        params = []
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("state_dict's parameter groups differ in size from the "
                                 "optimizer's")
            params.extend(zip(saved["params"], group["params"]))
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        saved_state = {int(k): v for k, v in state_dict["state"].items()}
        for number, p in params:
            if number in saved_state:
                self.state[p] = {k: _loaded(v, p.data) for k, v in saved_state[number].items()}

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        return "\n".join(lines) + "\n)"


def _loaded(value: Any, like) -> Any:
    """A saved state entry for the parameter array `like`: arrays and tensors as a copy on
    its device in its dtype, other values as they are."""
    if isinstance(value, Tensor):
        value = value.data
    return copied_onto(value, like) if is_array(value) else value
