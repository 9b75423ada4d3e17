"""Helpers of the device tests: is "cuda" the simulated CuPy, how close a device run must
come to the CPU's, host copies of results, and `check_on_device`, the device legs of the
convolution, pooling and norm families: an op on a device against the CPU's reference
kernels (float32 and float64, NCHW and channels-last), with no hidden host transfer."""

from __future__ import annotations

from collections import Counter

import fake_cupy
import numpy as np
import pytest

import autograd
from autograd.backend import CPU, cuda_module, device_of, to_device
from autograd.kernels import registry
from autograd.tensor import Tensor

# How close a float64 run on device "cuda" must come to the CPU's: the one definition of the
# device legs' tolerances (tests/op_testing.py's check_op and the device tests use these).
#
# SIMULATOR_TOLERANCE: the simulated CuPy runs the same NumPy code as the CPU, but the
# reference kernels where the CPU takes its numba fast paths (other summation orders), so the
# two differ by rounding alone, which is relative to the largest terms of a sum. check_op had
# rtol=1e-10 (one op) and the module / optimizer / op device tests 1e-9 (many ops, several
# steps); every one of them passes with 1e-10, so that is the value: the tighter one (~10^6
# ulp), far below what an indexing or gradient-routing bug gives. check_op adds rtol * (the
# largest entry) to atol (a gradient that cancels to 0 comes out as +-1e-12 on one device and
# exactly 0 on the other). The fast-path tests' float64 tolerance (tests/kernel_testing.py)
# is the same, for the same reason.
SIMULATOR_TOLERANCE = dict(rtol=1e-10, atol=1e-11)
# A real GPU also has its own libraries (cuBLAS, atomic scatter-adds, other libm): one op
# (check_op, the per-op device tests) within GPU_OP_TOLERANCE; a chain of them (a module's
# forward and backward, optimizer steps) within GPU_TOLERANCE.
GPU_OP_TOLERANCE = dict(rtol=1e-9, atol=1e-10)
GPU_TOLERANCE = dict(rtol=1e-7, atol=1e-9)


def simulated() -> bool:
    """Whether device "cuda" is the simulated CuPy (or there is no GPU at all)."""
    return not autograd.cuda.is_available() or cuda_module() is fake_cupy


def counts_transfers(device) -> bool:
    """Whether host transfers on `device` are counted: only the simulated CuPy counts them
    (a transfer assert elsewhere would check nothing)."""
    return (str(device).startswith("cuda") and autograd.cuda.is_available()
            and cuda_module() is fake_cupy)


def tolerance(one_op: bool = False) -> dict:
    """How close a device run must come to the CPU's (float64): that of one op, or of a
    chain of them (the default)."""
    if simulated():
        return SIMULATOR_TOLERANCE
    return GPU_OP_TOLERANCE if one_op else GPU_TOLERANCE


def host(value) -> np.ndarray:
    """A tensor's or an array's values on the host (from any device)."""
    return to_device(value.data if isinstance(value, autograd.Tensor) else value, CPU)


def cuda_host(array) -> np.ndarray:
    """A kernel's result, asserted to be on device "cuda", on the host."""
    assert device_of(array) == "cuda", f"a result on {device_of(array)}"
    return to_device(array, CPU)


def device_array(host: np.ndarray, device: str, channels_last: bool):
    """`host` on `device`; a 4-D array with channels-last memory when asked."""
    if channels_last and host.ndim == 4:
        return to_device(np.ascontiguousarray(host.transpose(0, 2, 3, 1)),
                         device).transpose(0, 3, 1, 2)
    return to_device(host, device)


def _run_on(fn, inputs: list[np.ndarray], device: str, channels_last: bool, seed: int = 0):
    """fn(*tensors) on `device` and backward with a seeded upstream gradient: (output,
    gradients, the output tensor) with arrays copied to the host."""
    tensors = [Tensor(device_array(a, device, channels_last), requires_grad=True)
               for a in inputs]
    counted = counts_transfers(device)
    before = Counter(fake_cupy.transfers)
    out = fn(*tensors)
    assert not counted or fake_cupy.transfers == before, "a host transfer in the forward"
    upstream = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    upstream = Tensor(to_device(upstream, device))
    before = Counter(fake_cupy.transfers)
    out.backward(upstream)
    assert not counted or fake_cupy.transfers == before, "a host transfer in the backward"
    assert out.device == device and all(t.grad.device == device for t in tensors)
    grads = [t.grad.numpy(force=True) for t in tensors]
    return out.numpy(force=True), grads, out


def check_on_device(fn, inputs: list[np.ndarray], device: str, dtype, channels_last: bool,
                    monkeypatch, layout: bool = True) -> None:
    """fn's output and gradients on `device` (float32 or float64, NCHW or channels-last
    inputs) equal the CPU's with the reference kernels (AUTOGRAD_REFERENCE_KERNELS=1); on
    the simulated CuPy, with no host transfer in forward or backward; with `layout`, the
    output in the memory order the CPU's fast paths give (on a device that has fast paths:
    the ops' own math, which the simulator runs, may order memory otherwise)."""
    inputs = [a.astype(dtype) for a in inputs]
    with monkeypatch.context() as env:
        env.setenv("AUTOGRAD_REFERENCE_KERNELS", "1")
        expected, expected_grads, _ = _run_on(fn, inputs, "cpu", channels_last)
    out, grads, out_tensor = _run_on(fn, inputs, device, channels_last)
    # Other summation orders (references, cuBLAS) differ by rounding, relative to the
    # largest terms of a sum: a share of the largest entry joins the absolute tolerance
    # (float64: SIMULATOR_TOLERANCE).
    rtol, share = (2e-4, 2e-5) if dtype == np.float32 else (SIMULATOR_TOLERANCE["rtol"],
                                                             SIMULATOR_TOLERANCE["atol"])
    assert out.dtype == dtype and out.shape == expected.shape
    for i, (got, want) in enumerate(zip([out, *grads], [expected, *expected_grads])):
        assert got.dtype == dtype and got.shape == want.shape
        atol = share * max(1.0, float(np.abs(want).max(initial=0.0)))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol,
                                   err_msg="output" if i == 0 else f"gradient of input {i - 1}")
    if layout and registry.device_type(out_tensor.data) is not None:
        fast_out = _run_on(fn, inputs, "cpu", channels_last)[2]  # NCHW views of NHWC...
        assert np.argsort(out_tensor.data.strides).tolist() == \
            np.argsort(fast_out.data.strides).tolist()


DTYPES = [np.float32, np.float64]
# check_on_device's legs: float32 and float64, NCHW and channels-last (NHWC memory) inputs
CHANNELS_LAST = pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])


def normal(*shape: int, seed: int = 1) -> np.ndarray:
    """Standard normal values of `shape`, seeded by `seed` and the shape."""
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape)


# ---- one op on a device against the CPU, on the same inputs (float64) --------------------


def run_on_device(fn, arrays, device, requires_grad=True, seed=0):
    """fn on float64 tensors of `arrays` on `device`: its outputs and the inputs' gradients
    after backward of sum <out_k, upstream_k> (a fixed random upstream), on the host."""
    tensors = [autograd.Tensor(a, device=device, requires_grad=requires_grad) for a in arrays]
    out = fn(*tensors)
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    for o in outputs:
        assert o.device == device, f"an output on {o.device}, expected {device}"
    rng = np.random.default_rng(seed)
    terms = [(o * autograd.tensor(rng.standard_normal(o.shape), dtype=o.dtype, device=device))
             .sum() for o in outputs if o.requires_grad]
    if terms:
        sum(terms[1:], terms[0]).backward()
    grads = []
    for t in tensors:
        if t.grad is not None:
            assert t.grad.device == device, f"a gradient on {t.grad.device}"
        grads.append(None if t.grad is None else host(t.grad.data))
    return [host(o.data) for o in outputs], grads


def assert_same_as_cpu(fn, *arrays, device, requires_grad=True):
    """fn on `device` gives the CPU's outputs and gradients."""
    got = run_on_device(fn, arrays, device, requires_grad)
    expected = run_on_device(fn, arrays, "cpu", requires_grad)
    for g, e in zip(got[0] + got[1], expected[0] + expected[1]):
        assert (g is None) == (e is None)
        if g is not None:
            assert g.dtype == e.dtype and g.shape == e.shape
            np.testing.assert_allclose(g, e, **tolerance(one_op=True))
    return got
