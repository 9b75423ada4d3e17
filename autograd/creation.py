"""Tensor factories: tensor, zeros, ones, full, arange, linspace, eye and the random ones,
which draw from a `numpy.random.Generator` (`generator=`, else the seeded default)."""

from __future__ import annotations

from typing import Any

import numpy as np

from autograd.random import resolve
from autograd.tensor import Tensor, as_array, default_dtype


def _size(size) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def tensor(data: Any, dtype=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of `data` (as `torch.tensor`)."""
    return Tensor(np.array(as_array(data, dtype), copy=True), requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing `array`'s memory and dtype."""
    return Tensor(array)


def zeros(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_size(size), dtype or default_dtype), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_size(size), dtype or default_dtype), requires_grad=requires_grad)


def full(size, fill_value: float, dtype=None, requires_grad: bool = False) -> Tensor:
    array = np.full(tuple(size), fill_value, dtype or default_dtype)
    return Tensor(array, requires_grad=requires_grad)


def zeros_like(other: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return zeros(other.shape, dtype=dtype or other.dtype, requires_grad=requires_grad)


def ones_like(other: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return ones(other.shape, dtype=dtype or other.dtype, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    """Integers give int64, any float gives float32 (as PyTorch)."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        all_ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if all_ints else default_dtype
    return Tensor(np.arange(start, end, step, dtype=dtype), requires_grad=requires_grad)


def linspace(start: float, end: float, steps: int, dtype=None) -> Tensor:
    return Tensor(np.linspace(start, end, steps, dtype=dtype or default_dtype))


def eye(n: int, m: int | None = None, dtype=None) -> Tensor:
    return Tensor(np.eye(n, m, dtype=dtype or default_dtype))


def randn(*size, generator=None, dtype=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples."""
    array = resolve(generator).standard_normal(_size(size)).astype(dtype or default_dtype)
    return Tensor(array, requires_grad=requires_grad)


def rand(*size, generator=None, dtype=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1)."""
    array = resolve(generator).random(_size(size)).astype(dtype or default_dtype)
    return Tensor(array, requires_grad=requires_grad)


def randint(low: int, high: int, size, generator=None) -> Tensor:
    """Integers in [low, high), int64."""
    return Tensor(resolve(generator).integers(low, high, size=tuple(size), dtype=np.int64))


def randn_like(other: Tensor, generator=None, dtype=None) -> Tensor:
    return randn(other.shape, generator=generator, dtype=dtype or other.dtype)
