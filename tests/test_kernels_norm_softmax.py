"""The numba group-norm and softmax kernels against their NumPy references, in float32 and
float64, and the AUTOGRAD_REFERENCE_KERNELS switch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd.kernels import activation, norm, softmax
from autograd.nn import functional as F

TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@st.composite
def group_norm_case(draw, dtype):
    groups, per_group = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shape = (draw(st.integers(1, 3)), groups * per_group, draw(st.integers(1, 20)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    offset, spread = draw(st.sampled_from([(0.0, 1.0), (5.0, 0.1), (-2.0, 3.0), (1.0, 0.0)]))
    x = (offset + spread * rng.standard_normal(shape)).astype(dtype)
    weight, bias, grad = (rng.standard_normal(s).astype(dtype)
                          for s in (shape[1], shape[1], shape))
    return x, weight, bias, grad, groups


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data(), silu=st.booleans(), channels_last=st.booleans())
def test_group_norm_kernels_match_references(dtype, data, silu, channels_last):
    x, weight, bias, grad, groups = data.draw(group_norm_case(dtype))
    if channels_last:  # (N, M, C) memory, as convolutions leave it: the other kernel family
        x, grad = (np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)
                   for a in (x, grad))
    fused = norm.group_norm_forward(x, weight, bias, groups, 1e-5, silu)
    reference = norm.group_norm_forward_reference(x, weight, bias, groups, 1e-5)
    if silu:
        reference = (activation.silu_reference(reference[0]), *reference[1:])
    for a, b in zip(fused, reference):
        assert a.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, **TOLERANCE[dtype])
    if channels_last or silu:
        assert fused[0].transpose(0, 2, 1).flags.c_contiguous
    _, mean, rstd = norm.group_norm_forward_reference(x, weight, bias, groups, 1e-5)
    fused_grads = norm.group_norm_backward(grad, x, mean, rstd, weight, groups, bias, silu)
    upstream = (norm._silu_gradient_reference(grad, x, mean, rstd, weight, bias, groups)
                if silu else grad)
    reference_grads = norm.group_norm_backward_reference(upstream, x, mean, rstd, weight,
                                                         groups)
    scale = {np.float32: 1e-3, np.float64: 1e-9}[dtype] * (1 + float(rstd.max()))
    for a, b in zip(fused_grads, reference_grads):
        assert a.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=TOLERANCE[dtype]["rtol"], atol=scale)


def test_silu_gradient_reference_is_the_chain_rule():
    # d/dx silu(group_norm(x)) by finite differences of the references alone.
    rng = np.random.default_rng(1)
    x, weight, bias, grad = (rng.standard_normal(s) for s in ((2, 4, 5), 4, 4, (2, 4, 5)))
    _, mean, rstd = norm.group_norm_forward_reference(x, weight, bias, 2, 1e-5)
    upstream = norm._silu_gradient_reference(grad, x, mean, rstd, weight, bias, 2)
    analytic = norm.group_norm_backward_reference(upstream, x, mean, rstd, weight, 2)[0]
    direction = rng.standard_normal(x.shape)

    def loss(a):
        return (activation.silu_reference(
            norm.group_norm_forward_reference(a, weight, bias, 2, 1e-5)[0]) * grad).sum()

    numeric = (loss(x + 1e-6 * direction) - loss(x - 1e-6 * direction)) / 2e-6
    np.testing.assert_allclose((analytic * direction).sum(), numeric, rtol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=9))
def test_softmax_kernels_match_references(dtype, data, shape):
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-30, 30, width=32)))
    if data.draw(st.booleans()):  # masked entries, some rows entirely
        x = np.where(data.draw(hnp.arrays(np.bool_, shape)), x, -np.inf).astype(dtype)
    grad = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-3, 3, width=32)))
    fused, reference = softmax.softmax_forward(x), softmax.softmax_forward_reference(x)
    assert fused.dtype == dtype
    np.testing.assert_allclose(fused, reference, **TOLERANCE[dtype])
    assert np.all(np.isfinite(fused))
    sums = fused.sum(axis=-1)
    empty = np.all(np.isneginf(x), axis=-1)
    np.testing.assert_allclose(sums, np.where(empty, 0.0, 1.0), rtol=1e-5)
    np.testing.assert_allclose(softmax.softmax_backward(grad, fused),
                               softmax.softmax_backward_reference(grad, fused),
                               **TOLERANCE[dtype])


@pytest.mark.parametrize("reference", ["0", "1"])
def test_plain_softmax_keeps_nan_for_all_masked_rows_and_uses_the_kernel(monkeypatch,
                                                                       reference):
    monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", reference)
    x = np.array([[0.0, 1.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    for dim in (-1, 0):
        with np.errstate(invalid="ignore"):
            out = autograd.Tensor(x).softmax(dim).numpy()
        np.testing.assert_allclose(out[0, :2], np.exp([0, 1]) / np.exp([0, 1]).sum()
                                   if dim == -1 else [1.0, 1.0])
        assert np.all(np.isnan(out[1] if dim == -1 else out[:, 2]))
    np.testing.assert_array_equal(softmax.softmax_forward(x)[1], 0.0)  # attention's choice
    for name, replacement in _break(*DRIVERS).items():
        monkeypatch.setattr(softmax, name, replacement)
    if reference == "0":
        with pytest.raises(AssertionError, match="compiled kernel ran"):
            autograd.Tensor(x).softmax(-1)
    with np.errstate(invalid="ignore"):
        autograd.Tensor(x).softmax(0)  # other axes stay on NumPy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_drivers_on_big_inputs_match_references_and_serial_drivers(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 32, 1024)) + 2).astype(dtype)
    assert x.size >= norm.PARALLEL_MIN_ELEMENTS
    weight, bias, grad = (rng.standard_normal(s).astype(dtype) for s in (32, 32, x.shape))
    out, mean, rstd = norm.group_norm_forward(x, weight, bias, 8, 1e-5)
    for a, b in zip((out, mean, rstd), norm.group_norm_forward_reference(x, weight, bias, 8,
                                                                         1e-5)):
        np.testing.assert_allclose(a, b, **TOLERANCE[dtype])
    serial = np.empty_like(out), np.empty_like(mean), np.empty_like(rstd)
    norm._forward_serial(x, weight, bias, 8, 1e-5, *serial)
    np.testing.assert_array_equal(serial[0], out)
    fused = norm.group_norm_backward(grad, x, mean, rstd, weight, 8)
    reference = norm.group_norm_backward_reference(grad, x, mean, rstd, weight, 8)
    for a, b in zip(fused, reference):
        np.testing.assert_allclose(a, b, rtol=TOLERANCE[dtype]["rtol"],
                                   atol=TOLERANCE[dtype]["atol"] * 100)
    scores = x.reshape(-1, 256)
    probs = softmax.softmax_forward(scores)
    np.testing.assert_allclose(probs, softmax.softmax_forward_reference(scores),
                               **TOLERANCE[dtype])
    serial_probs = np.empty_like(probs)
    softmax._forward_serial(scores, serial_probs, 0.0)
    np.testing.assert_array_equal(serial_probs, probs)
    upstream = grad.reshape(-1, 256)
    np.testing.assert_allclose(softmax.softmax_backward(upstream, probs),
                               softmax.softmax_backward_reference(upstream, probs),
                               **TOLERANCE[dtype])


def test_kernels_accept_non_contiguous_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 10))[:, :, ::2]
    np.testing.assert_allclose(softmax.softmax_forward(x), softmax.softmax_forward_reference(x))
    weight, bias = np.ones(6), np.zeros(6)
    np.testing.assert_allclose(norm.group_norm_forward(x, weight, bias, 3, 1e-5)[0],
                               norm.group_norm_forward_reference(x, weight, bias, 3, 1e-5)[0])


DRIVERS = ("_forward_serial", "_forward_parallel", "_backward_serial", "_backward_parallel")


def _break(*names):
    def broken(*args):
        raise AssertionError("the compiled kernel ran")
    return {name: broken for name in names}


@pytest.mark.parametrize("reference", [False, True])
def test_environment_switch_selects_references_at_call_time(monkeypatch, reference):
    for module in (norm, softmax):
        for name, replacement in _break(*DRIVERS).items():
            monkeypatch.setattr(module, name, replacement)
    monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", "1" if reference else "0")
    x = autograd.randn(2, 4, 3, requires_grad=True)

    def run():
        out = F.group_norm(x, 2) + F.scaled_dot_product_attention(x, x, x)
        out.sum().backward()

    if reference:
        run()
        assert x.grad is not None
    else:
        with pytest.raises(AssertionError, match="compiled kernel ran"):
            run()


def test_kernels_reject_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        softmax.softmax_forward(np.zeros((2, 3), np.float16))
    with pytest.raises(TypeError, match="float32 or float64"):
        norm.group_norm_forward(np.zeros((1, 2, 3), np.int64), np.ones(2), np.zeros(2), 1, 1e-5)
