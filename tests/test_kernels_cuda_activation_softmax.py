"""The device legs of the sigmoid / SiLU, erf / erfc and fused softmax kernel dispatchers,
against their references computed on the CPU, in float32 and float64, on awkward sizes
(empty, one element, not a multiple of the block), non-contiguous and channels-last inputs,
and softmax rows that are all -inf.

Legs: "cuda" (a real GPU: the CUDA kernels of kernels/cuda/activation.cu, special.cu and
softmax.cu; skipped without one), "cuda-sim" (the simulated CuPy: the references, on device
arrays) and "cuda-emulated" (the same CUDA sources compiled for the CPU by
tests/cuda_emulator.py, with the launchers' arguments checked against the kernels' C
signatures; skipped without g++).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autograd.backend import device_of, to_device
from autograd.kernels import activation, kernel_backend, softmax, special

DTYPES = [np.float32, np.float64]




def device(array):
    return to_device(np.ascontiguousarray(array), "cuda")


def host(array) -> np.ndarray:
    assert device_of(array) == "cuda", f"a result on {device_of(array)}"
    return to_device(array, "cpu")


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


def check_backend(leg: str, array) -> None:
    """The dispatcher took the path the leg is about."""
    assert kernel_backend(array) == ("reference" if leg == "cuda-sim" else "cuda")


def values(shape, dtype, scale=6.0, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    flat = x.reshape(-1)
    specials = [-1000.0, 1000.0, 0.0, -90.0, -0.0, 30.0, -30.0]
    flat[: min(flat.size, len(specials))] = specials[: flat.size]
    return x.astype(dtype)


# ---- element-wise: sigmoid, silu, silu_backward, erf, erfc --------------------------------

SIZES = [(0,), (1,), (255,), (257,), (3, 5, 7)]


def _cpu_erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)).astype(x.dtype)


def _cpu_erfc(x):
    return np.vectorize(math.erfc, otypes=[np.float64])(x.astype(np.float64)).astype(x.dtype)


UNARY = {
    "sigmoid": (activation.sigmoid, lambda x: activation.sigmoid_reference(
        x.astype(np.float64)).astype(x.dtype)),
    "silu": (activation.silu, lambda x: activation.silu_reference(
        x.astype(np.float64)).astype(x.dtype)),
    "erf": (special.erf, _cpu_erf),
    "erfc": (special.erfc, _cpu_erfc),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_unary_kernels_match_the_cpu_reference(name, dtype, shape, kernel_leg):
    kernel, reference = UNARY[name]
    x = values(shape, dtype)
    x_there = device(x)
    check_backend(kernel_leg, x_there)
    got = kernel(x_there)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(host(got), reference(x), **tolerance(dtype))


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", DTYPES)
def test_unary_kernels_on_strided_and_channels_last_inputs(name, dtype, kernel_leg):
    kernel, reference = UNARY[name]
    x = values((2, 9, 4, 3), dtype)
    strided = device(x)[:, ::2, :, 1:]  # not dense: made contiguous first
    np.testing.assert_allclose(host(kernel(strided)), reference(x[:, ::2, :, 1:]),
                               **tolerance(dtype))
    channels_last = device(x).transpose(0, 3, 1, 2)  # NCHW view of NHWC memory
    got = kernel(channels_last)
    assert got.shape == channels_last.shape
    if kernel_leg != "cuda-sim" or name not in ("erf", "erfc"):  # those references go to the host
        assert got.transpose(0, 2, 3, 1).flags.c_contiguous, "the layout was not kept"
    np.testing.assert_allclose(host(got), reference(x.transpose(0, 3, 1, 2)),
                               **tolerance(dtype))


def test_erfc_keeps_its_accuracy_in_the_upper_tail(kernel_leg):
    x = np.array([6.0, 10.0, 20.0, 26.0])  # erf(x) rounds to 1, erfc(x) from 2e-17 down
    got = host(special.erfc(device(x)))
    assert np.all(got > 0) and np.all(host(special.erf(device(x))) == 1.0)
    np.testing.assert_allclose(got, _cpu_erfc(x), rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((257,), (257,)), ((3, 5, 7), (3, 5, 7)),
                                    ((3, 1, 7), (5, 1)), ((7,), (4, 3, 7)), ((0, 3), (3,))],
                         ids=str)
def test_silu_backward_matches_the_cpu_reference(dtype, shapes, kernel_leg):
    x, grad = values(shapes[0], dtype), values(shapes[1], dtype, scale=1.0, seed=1)
    x_there, grad_there = device(x), device(grad)
    check_backend(kernel_leg, x_there)
    got = activation.silu_backward(x_there, grad_there)
    expected = activation.silu_backward_reference(x.astype(np.float64), grad.astype(np.float64))
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(host(got), expected.astype(dtype),
                               **silu_backward_tolerance(dtype, grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_backward_on_channels_last_and_strided_inputs(dtype, kernel_leg):
    x, grad = values((2, 4, 5, 3), dtype), values((2, 4, 5, 3), dtype, scale=1.0, seed=2)
    x_there, grad_there = device(x).transpose(0, 3, 1, 2), device(grad).transpose(0, 3, 1, 2)
    got = activation.silu_backward(x_there, grad_there)
    assert got.transpose(0, 2, 3, 1).flags.c_contiguous
    expected = activation.silu_backward_reference(x.transpose(0, 3, 1, 2).astype(np.float64),
                                                  grad.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(host(got), expected.astype(dtype),
                               **silu_backward_tolerance(dtype, grad))
    mixed = activation.silu_backward(x_there, device(grad.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(host(mixed), expected.astype(dtype),
                               **silu_backward_tolerance(dtype, grad))


def test_the_cuda_kernels_reject_other_dtypes(kernel_leg):
    if kernel_leg == "cuda-sim":
        pytest.skip("the references compute in any dtype")
    with pytest.raises(TypeError, match="float32 or float64 arrays, got int32"):
        activation.silu(device(np.arange(3, dtype=np.int32)))
    with pytest.raises(TypeError, match="inputs of one dtype"):
        activation.silu_backward(device(np.ones(3)), device(np.ones(3, np.float32)))


# ---- fused softmax ------------------------------------------------------------------------


def _with_empty_rows(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    rows = x.reshape(-1, x.shape[-1])
    rows[0] = -np.inf  # every entry -inf
    if len(rows) > 1:  # only the last entry finite: the row maximum must see every thread
        rows[1, :-1] = -np.inf
    if len(rows) > 2:
        rows[2, ::2] = -np.inf  # some: an ordinary row
    if len(rows) > 3:
        rows[3, -1] = 1000.0  # exp overflows unless the true maximum is subtracted
    return x


SOFTMAX_SHAPES = [(1, 1), (4, 1), (3, 5), (2, 3, 33), (5, 300), (2, 257)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("zero_empty_rows", [True, False])
def test_softmax_forward_matches_the_cpu_reference(dtype, shape, zero_empty_rows, kernel_leg):
    x = _with_empty_rows(values(shape, dtype, scale=4.0))
    x_there = device(x)
    check_backend(kernel_leg, x_there)
    got = host(softmax.softmax_forward(x_there, zero_empty_rows=zero_empty_rows))
    expected = softmax.softmax_forward_reference(x.astype(np.float64), zero_empty_rows)
    assert got.dtype == dtype and got.shape == shape
    empty = np.all(np.isneginf(x), axis=-1)
    if zero_empty_rows:
        assert np.all(got[empty] == 0)
    else:
        assert np.all(np.isnan(got[empty]))
    assert np.all(np.isfinite(got[~empty]))
    np.testing.assert_allclose(got, expected.astype(dtype), **tolerance(dtype))
    np.testing.assert_allclose(got[~empty].sum(axis=-1), 1.0,
                               rtol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax_backward_matches_the_cpu_reference(dtype, shape, kernel_leg):
    x = _with_empty_rows(values(shape, dtype, scale=4.0))
    y = softmax.softmax_forward_reference(x)  # zeros on the empty rows
    grad = values(shape, dtype, scale=1.0, seed=3)
    y_there = device(y)
    check_backend(kernel_leg, y_there)
    got = host(softmax.softmax_backward(device(grad), y_there))
    expected = softmax.softmax_backward_reference(grad.astype(np.float64), y.astype(np.float64))
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(got, expected.astype(dtype), rtol=tolerance(dtype)["rtol"],
                               atol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_on_non_contiguous_empty_and_0d_inputs(dtype, kernel_leg):
    x = values((4, 6, 5), dtype, scale=3.0)
    transposed = device(x).transpose(0, 2, 1)  # the last axis strided
    got = host(softmax.softmax_forward(transposed))
    np.testing.assert_allclose(got, softmax.softmax_forward_reference(x.transpose(0, 2, 1)),
                               **tolerance(dtype))
    grad = values((4, 5, 6), dtype, seed=4)
    y = softmax.softmax_forward_reference(x.transpose(0, 2, 1))

    def strided(a):  # a's values, read from transposed memory on the device
        return device(a.transpose(0, 2, 1)).transpose(0, 2, 1)

    got = host(softmax.softmax_backward(strided(grad), strided(y)))
    np.testing.assert_allclose(got, softmax.softmax_backward_reference(grad, y),
                               rtol=tolerance(dtype)["rtol"], atol=1e-6)
    for shape in [(0, 4), (3, 0), (0,)]:
        empty = device(np.zeros(shape, dtype))
        assert softmax.softmax_forward(empty).shape == shape
        assert softmax.softmax_backward(empty, empty).shape == shape
    scalar = softmax.softmax_forward(to_device(np.array(2.5, dtype), "cuda"))
    assert scalar.shape == () and host(scalar) == 1.0


def test_softmax_rows_past_the_grid_loop_over_blocks(kernel_leg, monkeypatch):
    # More rows than blocks: each block walks over several rows (the grid-stride loop).
    monkeypatch.setattr(softmax, "MAX_BLOCKS", 2)
    x = _with_empty_rows(values((7, 40), np.float64, scale=4.0))
    got = host(softmax.softmax_forward(device(x), zero_empty_rows=True))
    np.testing.assert_allclose(got, softmax.softmax_forward_reference(x), **tolerance(x.dtype))
    grad = values((7, 40), np.float64, seed=5)
    y = softmax.softmax_forward_reference(x)
    got = host(softmax.softmax_backward(device(grad), device(y)))
    np.testing.assert_allclose(got, softmax.softmax_backward_reference(grad, y), rtol=1e-13,
                               atol=1e-15)


def test_softmax_threads_per_row_are_a_power_of_two_up_to_256():
    for length, threads in [(1, 32), (32, 32), (33, 64), (100, 128), (256, 256),
                            (100_000, 256)]:
        assert softmax._row_launch(3, length) == ((3,), (threads,))
    assert softmax._row_launch(10**6, 5)[0] == (softmax.MAX_BLOCKS,)


def test_softmax_rejects_integer_inputs_on_the_device(kernel_leg):
    if kernel_leg == "cuda-sim":
        pytest.skip("the references compute in any dtype")
    with pytest.raises(TypeError, match="float32 or float64"):
        softmax.softmax_backward(device(np.ones((2, 3), np.int64)),
                                 device(np.ones((2, 3), np.int64)))
