"""Devices and array backends: NumPy arrays on "cpu", CuPy arrays on "cuda", told apart per
array like Chainer's `xp`. Ops are written once against the module `get_array_module`
returns; only the hot kernels differ per backend (numba on the CPU, CUDA C on the GPU).

CuPy is optional: `import autograd` never needs it, and asking for "cuda" without CuPy or
without a GPU raises a `RuntimeError` that says which of the two is missing.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import numpy as np

CUPY_INSTALL_HINT = ("pip install 'tinydiff[cuda12]' (CUDA 12) or 'tinydiff[cuda13]' "
                     "(CUDA 13)")

# The CuPy module once a GPU was found, and why not when none was (asked once per process).
_cupy: ModuleType | None = None
_cupy_problem: str | None = None


class Device:
    """Where a tensor's array lives: `Device("cpu")`, `Device("cuda")` (= "cuda:0"),
    `Device("cuda:1")`. Compares equal to its string: `x.device == "cuda:0"`."""

    __slots__ = ("type", "index")

    def __init__(self, spec: str | Device = "cpu", index: int | None = None) -> None:
        if isinstance(spec, Device):
            spec, index = spec.type, spec.index if index is None else index
        if not isinstance(spec, str):
            raise TypeError(f"a device is a string such as 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, number = spec.partition(":")
        if kind not in ("cpu", "cuda") or (number and not number.isdigit()) or (
                kind == "cpu" and (number or index)):
            raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")
        if number:
            if index is not None and index != int(number):
                raise ValueError(f"device {spec!r} given with a different index {index}")
            index = int(number)
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "index", None if kind == "cpu" else int(index or 0))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Device is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except ValueError:
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type,
                                                                          other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"


CPU = Device("cpu")


def device(spec: str | Device | None) -> Device:
    """The Device for "cpu", "cuda", "cuda:N" or a Device (None means the CPU)."""
    return CPU if spec is None else spec if isinstance(spec, Device) else Device(spec)


# ---- CuPy, loaded on first use ------------------------------------------------------------


def cuda_module() -> ModuleType:
    """The CuPy module, or a RuntimeError saying why device "cuda" cannot be used."""
    global _cupy, _cupy_problem
    if _cupy is not None:
        return _cupy
    if _cupy_problem is None:
        try:
            import cupy
        except ImportError as error:
            _cupy_problem = f"CuPy is not installed ({error}); {CUPY_INSTALL_HINT}"
        else:
            try:
                count, reason = cupy.cuda.runtime.getDeviceCount(), "no GPU is visible"
            except Exception as error:  # CUDARuntimeError: no driver, driver too old...
                count, reason = 0, f"{type(error).__name__}: {error}"
            if count > 0:
                _cupy = cupy
                return cupy
            _cupy_problem = f"CuPy {cupy.__version__} is installed but finds no GPU: {reason}"
    raise RuntimeError(f"device 'cuda' is not available: {_cupy_problem}")


def cuda_is_available() -> bool:
    """Whether tensors can be put on device "cuda" (CuPy installed and a GPU found)."""
    try:
        cuda_module()
    except RuntimeError:
        return False
    return True


def cuda_device_count() -> int:
    return cuda_module().cuda.runtime.getDeviceCount() if cuda_is_available() else 0


def is_cupy_array(array: Any) -> bool:
    if _cupy is not None:
        return isinstance(array, _cupy.ndarray)
    return type(array).__module__.startswith("cupy")


# ---- arrays and their devices -------------------------------------------------------------


def get_array_module(*arrays: Any) -> ModuleType:
    """The array module (numpy or cupy) of these arrays: cupy if any is a CuPy array."""
    if _cupy is not None:
        for array in arrays:
            if isinstance(array, _cupy.ndarray):
                return _cupy
    return np


def array_module(target: str | Device) -> ModuleType:
    """The array module that holds arrays on `target`."""
    return np if device(target).type == "cpu" else cuda_module()


def device_of(array: Any) -> Device:
    """The device an array lives on (NumPy arrays and Python values: the CPU)."""
    if isinstance(array, (np.ndarray, np.generic)) or not is_cupy_array(array):
        return CPU
    return Device("cuda", array.device.id)


def _check_index(target: Device) -> None:
    count = cuda_module().cuda.runtime.getDeviceCount()
    if target.index >= count:
        raise RuntimeError(f"device {target} was asked for, but CuPy sees {count} GPU(s): "
                           f"cuda:0 to cuda:{count - 1}")


def on_device(target: str | Device):
    """A context in which new arrays of `array_module(target)` are made on `target`."""
    target = device(target)
    if target.type == "cpu":
        return contextlib.nullcontext()
    _check_index(target)
    return cuda_module().cuda.Device(target.index)


def to_device(array: Any, target: str | Device) -> Any:
    """`array` on `target`: itself when it is already there, else a copy (host to device,
    device to host, or between GPUs)."""
    target = device(target)
    source = device_of(array)
    if source == target:
        return array
    if target.type == "cpu":
        return cuda_module().asnumpy(array)
    cupy = cuda_module()
    with on_device(target):
        if source.type == "cuda":  # asarray would hand back the array on the other GPU
            return cupy.array(array, copy=True)
        if np.ndim(array) == 0:  # a number: a fill kernel, not a (synchronising) copy
            value = np.asarray(array)
            return cupy.full((), value.item(), value.dtype)
        return cupy.asarray(array)


def is_floating(dtype) -> bool:
    return np.dtype(dtype).kind == "f"
