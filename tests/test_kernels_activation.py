"""The compiled sigmoid / SiLU / erf ufuncs (the ops' CPU fast paths) against the ops' math,
and the vectorised float32 sigmoid of the fused kernels."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_testing import op_math

from autograd.kernels import activation, registry
from autograd.ops.elementwise import erf_array, erfc_array, sigmoid_array


def fast(op: str, *arrays):
    path = registry.lookup(op, *arrays)
    assert path is not None
    return path(*arrays)


def sigmoid_math(x):
    with op_math():
        return sigmoid_array(x)


def silu_math(x):
    return x * sigmoid_math(x)


def silu_backward_math(x, grad):
    s = sigmoid_math(x)
    return grad * s * (1 + x * (1 - s))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_kernels_match_references(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 3, 5, 6)) * 6).astype(dtype)
    x.flat[:4] = [-1000.0, 1000.0, 0.0, -90.0]  # overflow of exp(-x) must give the limit
    grad = rng.standard_normal(x.shape).astype(dtype)
    tolerance = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14,
                                                                             atol=1e-300)
    pairs = [
        (fast("sigmoid", x), sigmoid_math(x)),
        (fast("silu", x), silu_math(x)),
        (fast("silu_backward", x, grad), silu_backward_math(x, grad)),
    ]
    for got, expected in pairs:
        assert got.dtype == dtype and np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected, **tolerance)


def test_activation_kernels_keep_a_channels_last_layout():
    x = np.zeros((2, 5, 5, 3), np.float32).transpose(0, 3, 1, 2)
    assert fast("silu", x).transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("times_y", [False, True])
def test_vectorised_sigmoid_matches_reference_over_the_whole_range(dtype, times_y):
    # Every binade that matters, both signs, zeros, and values past the clamp at 87.
    magnitudes = np.geomspace(1e-6, 120.0, 20001)
    y = np.concatenate([-magnitudes, [0.0, -0.0], magnitudes]).astype(dtype)
    out = np.empty_like(y)
    activation.sigmoid_into(y, out, times_y)
    expected = (silu_math(y.astype(np.float64)) if times_y
                else sigmoid_math(y.astype(np.float64)))
    # float32: within 4 ulp (measured 2.9) down to y = -87, where sigmoid leaves the normal
    # range and is flushed to 0; float64 takes libm's exp.
    normal = (y >= -87) & (expected != 0)
    relative = np.abs(out[normal] - expected[normal]) / np.abs(expected[normal])
    assert relative.max() < (4 * 2.0**-24 if dtype == np.float32 else 1e-15)
    assert np.all(np.abs(out[~normal] - expected[~normal]) < 1.5e-36)
    assert out.dtype == dtype


def test_vectorised_sigmoid_keeps_nan():
    y = np.array([np.nan, 1.0] * 8, np.float32)
    out = np.empty_like(y)
    activation.sigmoid_into(y, out, True)
    assert np.all(np.isnan(out[::2])) and np.all(np.isfinite(out[1::2]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_error_function_kernels_match_math(dtype):
    x = np.concatenate([np.linspace(-30, 30, 301), [0.0, -0.0, np.inf, -np.inf]]).astype(dtype)
    for op, math in (("erf", erf_array), ("erfc", erfc_array)):
        got = fast(op, x)
        with op_math():
            reference = math(x)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, reference, rtol=1e-6 if dtype == np.float32
                                   else 1e-15, atol=np.finfo(dtype).tiny)  # subnormals
    # erfc keeps its relative accuracy deep in the upper tail, where 1 - erf(x) is 0
    assert fast("erfc", np.array([10.0]))[0] > 0 and 1 - fast("erf", np.array([10.0]))[0] == 0
