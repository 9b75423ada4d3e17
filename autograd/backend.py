"""Array backends: NumPy on the CPU (CuPy on the GPU comes later), chosen per array like
Chainer's `xp`. Ops are written once against the module this returns."""

from __future__ import annotations

from types import ModuleType

import numpy as np


def get_array_module(*arrays) -> ModuleType:
    """The array module (numpy or cupy) that owns these arrays."""
    for array in arrays:
        module = type(array).__module__
        if module.startswith("cupy"):
            import cupy

            return cupy
    return np


def is_floating(dtype) -> bool:
    return np.dtype(dtype).kind == "f"
