"""The compiled im2col / col2im kernels against their NumPy references, and the thread knob."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

import autograd
from autograd.kernels import conv as kernels
from autograd.kernels import registry
from autograd.kernels.conv import Window
from autograd.ops import conv


@st.composite
def geometries(draw):
    """(input shape NHWC, Window) with a non-empty output."""
    shape = tuple(draw(st.integers(1, n)) for n in (3, 7, 7, 4))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(2))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(2))
    # Output sizes as a convolution with `padding` on both sides (or more below: "same").
    extra = tuple(draw(st.integers(0, 1)) for _ in range(2))
    output = tuple((n + 2 * p + e - d * (k - 1) - 1) // s + 1 for n, p, e, d, k, s in
                   zip(shape[1:3], padding, extra, dilation, kernel, stride))
    assume(min(output) >= 1)
    return shape, Window(kernel, stride, padding, dilation, output)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(geometry=geometries(), seed=st.integers(0, 2**16), pad_value=st.sampled_from(
    [0.0, -np.inf, 2.5]))
def test_im2col_matches_reference(dtype, geometry, seed, pad_value):
    shape, window = geometry
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    cols = kernels.im2col(x, window, pad_value)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, kernels.im2col_reference(x, window, pad_value))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(geometry=geometries(), seed=st.integers(0, 2**16))
def test_col2im_matches_reference_and_is_the_adjoint_of_im2col(dtype, geometry, seed):
    shape, window = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    cols = rng.standard_normal(kernels.im2col_reference(x, window).shape)
    image = kernels.col2im(cols.astype(dtype), shape, window)
    assert image.dtype == dtype and image.shape == shape
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(image, kernels.col2im_reference(cols, shape, window),
                               rtol=tolerance, atol=tolerance)
    # <im2col(x), cols> == <x, col2im(cols)>
    np.testing.assert_allclose(np.sum(kernels.im2col(x, window) * cols),
                               np.sum(x * kernels.col2im(cols, shape, window)), rtol=1e-10)


def test_kernels_take_non_contiguous_inputs_but_not_integers():
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), (5, 4))
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6))[:, :, :, ::2]
    np.testing.assert_array_equal(kernels.im2col(x, window),
                                  kernels.im2col_reference(x, window))
    integers = np.ones((1, 5, 4, 3), np.int64)
    assert registry.lookup("im2col", integers) is None
    np.testing.assert_array_equal(kernels.im2col(integers, window),
                                  kernels.im2col_reference(integers, window))


def test_reference_switch_is_read_at_call_time(monkeypatch):
    x = autograd.Tensor(np.random.default_rng(1).standard_normal((2, 3, 6, 5)))
    w = autograd.Tensor(np.random.default_rng(2).standard_normal((4, 3, 3, 3)))
    compiled = autograd.nn.functional.conv2d(x, w, stride=2, padding=1).numpy()
    called = []
    original = conv.conv2d_math  # the op's own math, which runs without fast paths
    monkeypatch.setattr(conv, "conv2d_math", lambda *args, **kw: called.append(1) or
                        original(*args, **kw))
    monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", "1")
    reference = autograd.nn.functional.conv2d(x, w, stride=2, padding=1).numpy()
    assert called
    np.testing.assert_allclose(compiled, reference, rtol=1e-12, atol=1e-12)


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_set_num_threads_sets_numba_and_blas():
    before = autograd.get_num_threads()
    try:
        autograd.set_num_threads(1)
        assert autograd.get_num_threads() == 1
        assert set(_blas_threads()) <= {1}
    finally:
        autograd.set_num_threads(before)
    assert autograd.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 2.0, 10_000])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        autograd.set_num_threads(bad)
