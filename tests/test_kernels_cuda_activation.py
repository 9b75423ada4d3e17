"""The CUDA fast paths of sigmoid / SiLU and erf / erfc against the ops' math computed on
the CPU, in float32 and float64, on awkward sizes (empty, one element, not a multiple of the
block), non-contiguous and channels-last inputs (softmax: tests/test_softmax.py).

Legs: "cuda" (a real GPU: the CUDA kernels of kernels/cuda/activation.cu and special.cu;
skipped without one) and "cuda-emulated" (the same CUDA sources compiled for the CPU by
tests/cuda_emulator.py, with the launchers' arguments checked against the kernels' C
signatures; skipped without g++).
"""

from __future__ import annotations

import numpy as np
import pytest
from device_testing import cuda_host
from kernel_testing import op_math

from autograd.backend import to_device
from autograd.kernels import registry
from autograd.ops import elementwise

DTYPES = [np.float32, np.float64]

def device(array):
    return to_device(np.ascontiguousarray(array), "cuda")


def tolerance(dtype) -> dict:
    # CUDA's exp, erf and erfc are within 1-5 ulp (float: 2-4 ulp). atol: float32's exp(90)
    # overflows, so sigmoid(-90) and silu(-90) are 0 rather than 8e-40 and -7e-38.
    if dtype == np.float32:
        return dict(rtol=4e-6, atol=1e-30)
    return dict(rtol=1e-13, atol=1e-300)


def silu_backward_tolerance(dtype, grad: np.ndarray) -> dict:
    # silu'(x) = s (1 + x (1 - s)) cancels near x = -1.28: the error is relative to the
    # terms (of the size of grad), not to the result (a GPU may also fuse them into FMAs).
    scale = float(np.abs(grad).max(initial=0.0))
    return dict(rtol=tolerance(dtype)["rtol"],
                atol=(4e-6 if dtype == np.float32 else 1e-14) * scale + 1e-30)


def fast(op: str):
    """The op's fast path for an array (asserting there is one)."""
    def run(*arrays):
        path = registry.lookup(op, *arrays)
        assert path is not None, f"no fast path of {op} for {arrays[0].dtype}"
        return path(*arrays)
    return run


def math_of(function):
    """An op's math, on the host, in float64, rounded to the input's dtype."""
    def run(*arrays):
        with op_math():
            return function(*(a.astype(np.float64) for a in arrays)).astype(arrays[0].dtype)
    return run


def silu_backward_math(x, grad):
    s = elementwise.sigmoid_array(x)
    return grad * s * (1 + x * (1 - s))


def values(shape, dtype, scale=6.0, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    flat = x.reshape(-1)
    specials = [-1000.0, 1000.0, 0.0, -90.0, -0.0, 30.0, -30.0]
    flat[: min(flat.size, len(specials))] = specials[: flat.size]
    return x.astype(dtype)


# ---- element-wise: sigmoid, silu, silu_backward, erf, erfc --------------------------------

SIZES = [(0,), (1,), (255,), (257,), (3, 5, 7)]


UNARY = {
    "sigmoid": (fast("sigmoid"), math_of(elementwise.sigmoid_array)),
    "silu": (fast("silu"), math_of(lambda x: x * elementwise.sigmoid_array(x))),
    "erf": (fast("erf"), math_of(elementwise.erf_array)),
    "erfc": (fast("erfc"), math_of(elementwise.erfc_array)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_unary_kernels_match_the_cpu_reference(name, dtype, shape, kernel_leg):
    kernel, reference = UNARY[name]
    x = values(shape, dtype)
    got = kernel(device(x))
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(cuda_host(got), reference(x), **tolerance(dtype))


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", DTYPES)
def test_unary_kernels_on_strided_and_channels_last_inputs(name, dtype, kernel_leg):
    kernel, reference = UNARY[name]
    x = values((2, 9, 4, 3), dtype)
    strided = device(x)[:, ::2, :, 1:]  # not dense: made contiguous first
    np.testing.assert_allclose(cuda_host(kernel(strided)), reference(x[:, ::2, :, 1:]),
                               **tolerance(dtype))
    channels_last = device(x).transpose(0, 3, 1, 2)  # NCHW view of NHWC memory
    got = kernel(channels_last)
    assert got.shape == channels_last.shape
    assert got.transpose(0, 2, 3, 1).flags.c_contiguous, "the layout was not kept"
    np.testing.assert_allclose(cuda_host(got), reference(x.transpose(0, 3, 1, 2)),
                               **tolerance(dtype))


def test_erfc_keeps_its_accuracy_in_the_upper_tail(kernel_leg):
    x = np.array([6.0, 10.0, 20.0, 26.0])  # erf(x) rounds to 1, erfc(x) from 2e-17 down
    got = cuda_host(UNARY["erfc"][0](device(x)))
    assert np.all(got > 0) and np.all(cuda_host(UNARY["erf"][0](device(x))) == 1.0)
    np.testing.assert_allclose(got, UNARY["erfc"][1](x), rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((257,), (257,)), ((3, 5, 7), (3, 5, 7)),
                                    ((3, 1, 7), (5, 1)), ((7,), (4, 3, 7)), ((0, 3), (3,))],
                         ids=str)
def test_silu_backward_matches_the_cpu_reference(dtype, shapes, kernel_leg):
    x, grad = values(shapes[0], dtype), values(shapes[1], dtype, scale=1.0, seed=1)
    got = fast("silu_backward")(device(x), device(grad))
    expected = silu_backward_math(x.astype(np.float64), grad.astype(np.float64))
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(cuda_host(got), expected.astype(dtype),
                               **silu_backward_tolerance(dtype, grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_backward_on_channels_last_and_strided_inputs(dtype, kernel_leg):
    x, grad = values((2, 4, 5, 3), dtype), values((2, 4, 5, 3), dtype, scale=1.0, seed=2)
    x_there, grad_there = device(x).transpose(0, 3, 1, 2), device(grad).transpose(0, 3, 1, 2)
    got = fast("silu_backward")(x_there, grad_there)
    assert got.transpose(0, 2, 3, 1).flags.c_contiguous
    expected = silu_backward_math(x.transpose(0, 3, 1, 2).astype(np.float64),
                                  grad.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(cuda_host(got), expected.astype(dtype),
                               **silu_backward_tolerance(dtype, grad))
    mixed = fast("silu_backward")(x_there, device(grad.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(cuda_host(mixed), expected.astype(dtype),
                               **silu_backward_tolerance(dtype, grad))


def test_the_cuda_fast_paths_decline_other_dtypes(kernel_leg):
    assert registry.lookup("silu", device(np.arange(3, dtype=np.int32))) is None
    assert registry.lookup("silu_backward", device(np.ones(3)),
                           device(np.ones(3, np.float32))) is None
