"""Fast paths beneath the ops: one table keyed by (op, device type), consulted where an op runs.

An op's `forward` and `backward` hold its math, written against the array module (NumPy or
CuPy); a compiled kernel that computes the same thing faster registers itself here, with a
predicate saying which arguments it takes (dtypes, layouts, shapes):

    @register("softmax", "cpu", supports=lambda x: x.dtype in FLOATS and x.flags.c_contiguous)
    def softmax_numba(x, empty_row_value): ...

and the op asks for it, falling back to its own math when there is none:

    fast = registry.lookup("softmax", x)
    if fast is not None:
        return fast(x, empty_row_value)

Device types: "cpu" (NumPy arrays: numba kernels) and "cuda" (CuPy arrays: CUDA C kernels).
An array of another module (the tests' simulated CuPy) has no fast paths, unless
`DEVICE_TYPES` maps its module's name to one (the tests' CUDA emulator maps the simulated
CuPy to "cuda"). `AUTOGRAD_REFERENCE_KERNELS=1` turns every fast path off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from autograd.observers import observed_kernel, observers

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Array module name -> the device type whose fast paths its arrays run.
DEVICE_TYPES = {"numpy": "cpu", "cupy": "cuda"}
KERNEL_NAMES = {"cpu": "numba", "cuda": "cuda"}  # what the profiler reports a fast path as


class FastPath(NamedTuple):
    run: Callable
    supports: Callable[..., bool]


_TABLE: dict[tuple[str, str], list[FastPath]] = {}


def use_reference_kernels() -> bool:
    """Whether AUTOGRAD_REFERENCE_KERNELS=1 turns the fast paths off (read at each call)."""
    return os.environ.get("AUTOGRAD_REFERENCE_KERNELS", "0") not in ("", "0", "false")


def floating(*arrays, **params) -> bool:
    """The usual predicate: every array float32 or float64, all of one dtype (whatever the
    op's other parameters)."""
    return arrays[0].dtype in FLOATS and all(a.dtype == arrays[0].dtype for a in arrays)


def register(op: str, device: str, supports: Callable[..., bool] = floating):
    """Decorator: the function is a fast path of `op` on `device` ("cpu" or "cuda") for the
    arguments `supports(*arrays, **params)` accepts (those the op passes to `lookup`)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"register: device must be 'cpu' or 'cuda', got {device!r}")

    def add(run: Callable) -> Callable:
        _TABLE.setdefault((op, device), []).append(FastPath(run, supports))
        return run

    return add


def device_type(array) -> str | None:
    """"cpu", "cuda", or None for an array whose module has no fast paths."""
    if type(array) is np.ndarray:
        return "cpu"
    return DEVICE_TYPES.get(type(array).__module__.split(".")[0])


def lookup(op: str, *arrays, **params) -> Callable | None:
    """The first fast path registered for `op` on the arrays' device type that supports
    these arguments, or None: then the op runs its own math."""
    device = device_type(arrays[0])
    found = None if use_reference_kernels() else next(
        (path.run for path in _TABLE.get((op, device), ()) if path.supports(*arrays, **params)),
        None)
    if observers:  # the profiler notes which implementation ran
        observed_kernel("reference" if found is None else KERNEL_NAMES[device])
    return found


def fast_paths(op: str) -> dict[str, list[Callable]]:
    """What is registered for `op`, per device type (for tests and benchmarks)."""
    return {device: [p.run for p in paths] for (name, device), paths in _TABLE.items()
            if name == op}


@contextmanager
def without(*runs: Callable) -> Iterator[None]:
    """A context manager: these fast paths are not looked up inside (the next registered
    one, or the op's math, runs instead); for benchmarks that time one against another."""
    saved = {key: list(paths) for key, paths in _TABLE.items()}
    try:
        for paths in _TABLE.values():
            paths[:] = [path for path in paths if path.run not in runs]
        yield
    finally:
        _TABLE.update(saved)
