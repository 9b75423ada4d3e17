"""Helpers of the fast-path tests: run an op with its fast paths or on its own math, and
compare the two (values and gradients), on the CPU (numba) or on device "cuda" (a real GPU,
or the CUDA sources emulated on the CPU).

A kernel test is `assert_fast_path_matches_math(fn, arrays, fast_path_ops, ...)`: fn's
output and input gradients with the fast paths against the same on the CPU with
AUTOGRAD_REFERENCE_KERNELS=1, after checking that the fast path would be taken.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
from device_testing import SIMULATOR_TOLERANCE

import autograd
from autograd.backend import CPU, device_of, to_device

# float64: rounding alone (other summation orders), as on the simulator (device_testing.py)
TOLERANCE = {np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
             np.dtype(np.float64): SIMULATOR_TOLERANCE}


@contextlib.contextmanager
def num_threads(n: int):
    """Inside: autograd's kernels on n threads (kernels/threads.py), as before after."""
    before = autograd.get_num_threads()
    autograd.set_num_threads(n)
    try:
        yield
    finally:
        autograd.set_num_threads(before)


@contextlib.contextmanager
def op_math():
    """Inside: every fast path off, the ops run their own math."""
    previous = os.environ.get("AUTOGRAD_REFERENCE_KERNELS")
    os.environ["AUTOGRAD_REFERENCE_KERNELS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["AUTOGRAD_REFERENCE_KERNELS"]
        else:
            os.environ["AUTOGRAD_REFERENCE_KERNELS"] = previous


def on(device: str, a: np.ndarray, layout: str = "contiguous"):
    """Host array `a` on `device` in a memory layout: "contiguous"; "channels_last" (the
    channel axis 1 innermost in memory, as convolutions leave it); "strided" (every other
    element of the last axis of a larger buffer)."""
    if layout == "channels_last" and a.ndim >= 3:
        order = (0, *range(2, a.ndim), 1)
        memory = to_device(np.ascontiguousarray(a.transpose(order)), device)
        return memory.transpose(tuple(int(i) for i in np.argsort(order)))
    if layout == "strided" and a.ndim >= 1:
        xp = autograd.backend.array_module(device)
        buffer = xp.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
        buffer[..., ::2] = to_device(a, device)
        return buffer[..., ::2]
    return to_device(a, device)


def forward_backward(fn, arrays, upstream: np.ndarray | None = None, seed: int = 0):
    """fn(*tensors) and backward of <out, upstream> (random by `seed` when not given):
    (out data on its device, [each input's gradient on its device])."""
    tensors = [autograd.Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    if upstream is None:
        upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(autograd.Tensor(to_device(upstream.astype(out.dtype), device_of(out.data))))
    return out.data, [t.grad.data for t in tensors]


def assert_fast_path_matches_math(fn, arrays, device: str = "cpu", layouts=None,
                                  tolerance: dict | None = None) -> tuple:
    """fn's output and gradients on `device` with the fast paths equal (within `tolerance`,
    by dtype) those of its math on the CPU; `layouts` per array (see `on`). Returns the
    fast run's (out, grads) on its device."""
    layouts = layouts or ["contiguous"] * len(arrays)
    with op_math():
        expected, expected_grads = forward_backward(fn, [on(CPU, a, lay) for a, lay
                                                         in zip(arrays, layouts)])
    out, grads = forward_backward(fn, [on(device, a, lay) for a, lay in zip(arrays, layouts)])
    close = tolerance or TOLERANCE[np.dtype(arrays[0].dtype)]
    assert out.dtype == expected.dtype and out.shape == expected.shape
    assert device_of(out) == device_of(on(device, np.zeros(1)))
    np.testing.assert_allclose(to_device(out, CPU), expected, **close, err_msg="output")
    scale = [float(np.abs(g).max(initial=0.0)) for g in expected_grads]
    for i, (got, want) in enumerate(zip(grads, expected_grads)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(to_device(got, CPU), want, rtol=close["rtol"],
                                   atol=close["atol"] + close["rtol"] * scale[i],
                                   err_msg=f"gradient {i}")
    return out, grads
