"""Tensor factories: tensor, zeros, ones, full, arange, linspace, eye and the random ones,
which draw from a `numpy.random.Generator` (`generator=`, else the seeded default).

Every factory takes `device=` ("cpu", "cuda", "cuda:N"). Random values are drawn on the
host and then moved, so one seed gives the same tensor on every device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autograd.backend import Device, array_module, on_device, to_device
from autograd.random import resolve
from autograd.tensor import Tensor, as_array, default_dtype


def _size(size) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def _made_on(device: str | Device | None, make, requires_grad: bool = False) -> Tensor:
    """A tensor of `make(xp)`, made directly on `device` with its array module."""
    target = "cpu" if device is None else device
    with on_device(target):
        return Tensor(make(array_module(target)), requires_grad=requires_grad)


def tensor(data: Any, dtype=None, device: str | Device | None = None,
           requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of `data` (as `torch.tensor`), on `device` (default:
    where `data` is, the CPU for Python values)."""
    array = as_array(data, dtype)
    moved = array if device is None else to_device(array, device)
    return Tensor(moved.copy() if moved is array else moved, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing `array`'s memory and dtype."""
    return Tensor(array)


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _made_on(device, lambda xp: xp.zeros(_size(size), dtype or default_dtype),
                    requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _made_on(device, lambda xp: xp.ones(_size(size), dtype or default_dtype),
                    requires_grad)


def full(size, fill_value: float, dtype=None, device=None,
         requires_grad: bool = False) -> Tensor:
    return _made_on(device, lambda xp: xp.full(tuple(size), fill_value,
                                                dtype or default_dtype), requires_grad)


def zeros_like(other: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return zeros(other.shape, dtype=dtype or other.dtype, device=device or other.device,
                 requires_grad=requires_grad)


def ones_like(other: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return ones(other.shape, dtype=dtype or other.dtype, device=device or other.device,
                requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None,
           requires_grad: bool = False) -> Tensor:
    """Integers give int64, any float gives float32 (as PyTorch)."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        all_ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if all_ints else default_dtype
    return _made_on(device, lambda xp: xp.arange(start, end, step, dtype=dtype),
                    requires_grad)


def linspace(start: float, end: float, steps: int, dtype=None, device=None) -> Tensor:
    return _made_on(device, lambda xp: xp.linspace(start, end, steps,
                                                    dtype=dtype or default_dtype))


def eye(n: int, m: int | None = None, dtype=None, device=None) -> Tensor:
    return _made_on(device, lambda xp: xp.eye(n, m, dtype=dtype or default_dtype))


def _drawn(values: np.ndarray, device, requires_grad: bool) -> Tensor:
    return Tensor(values if device is None else to_device(values, device),
                  requires_grad=requires_grad)


def randn(*size, generator=None, dtype=None, device=None,
          requires_grad: bool = False) -> Tensor:
    """Standard normal samples."""
    values = resolve(generator).standard_normal(_size(size)).astype(dtype or default_dtype)
    return _drawn(values, device, requires_grad)


def rand(*size, generator=None, dtype=None, device=None,
         requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1)."""
    values = resolve(generator).random(_size(size)).astype(dtype or default_dtype)
    return _drawn(values, device, requires_grad)


def randint(low: int, high: int, size, generator=None, device=None) -> Tensor:
    """Integers in [low, high), int64."""
    values = resolve(generator).integers(low, high, size=tuple(size), dtype=np.int64)
    return _drawn(values, device, False)


def randn_like(other: Tensor, generator=None, dtype=None, device=None) -> Tensor:
    return randn(other.shape, generator=generator, dtype=dtype or other.dtype,
                 device=device or other.device)
