"""The softmax family: softmax and log_softmax. Gradient checks (with check_op's
simulated-CuPy leg), PyTorch's values, the device legs (cuda-sim, cuda), and the fused
softmax kernels (numba, and CUDA on a real GPU or emulated) against the softmax math of
autograd/ops/reduction.py, which Softmax and attention share: values and gradients, rows of
-inf only (NaN for softmax, zeros for attention), awkward sizes, and what they decline.
Attention, the kernels' other user: tests/test_attention.py.

The kernels: autograd/kernels/softmax.py and autograd/kernels/cuda/softmax.cu."""

from __future__ import annotations

import numpy as np
import pytest
from device_testing import assert_same_as_cpu, run_on_device
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernel_testing import TOLERANCE, on, op_math
from op_testing import arrays, check_op, check_torch_case

import autograd
from autograd.backend import to_device
from autograd.kernels import registry
from autograd.kernels import softmax as softmax_kernels
from autograd.nn import functional as F
from autograd.ops.reduction import softmax_backward, softmax_forward

DTYPES = [np.float32, np.float64]


# ---- the ops: gradient checks, PyTorch's values, devices ------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
       dim=st.integers(-1, 0))
def test_softmax_family_gradcheck(name, data, shape, dim):
    x = data.draw(arrays(shape, low=-5, high=5))
    check_op(lambda t: getattr(t, name)(dim), x)


def test_log_softmax_matches_pytorch():
    check_torch_case("log_softmax", lambda x: x.log_softmax(dim=-1), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # -inf - -inf, on the CPU
def test_softmax_paths_and_empty_rows_match_the_cpu(gpu_device):
    x = np.random.default_rng(1).standard_normal((2, 3, 5))
    x[0, 1] = -np.inf  # an all -inf row: NaN, as PyTorch's softmax
    for fn in (lambda t: t.softmax(-1), lambda t: t.softmax(1),  # fused, and not
               lambda t: t.log_softmax(-1), lambda t: t.log_softmax(0)):
        got = assert_same_as_cpu(fn, x, device=gpu_device, requires_grad=False)
        assert got[0][0].shape == x.shape
    probs = run_on_device(lambda t: t.softmax(-1), [x], gpu_device, requires_grad=False)[0][0]
    assert np.all(np.isnan(probs[0, 1])) and np.all(np.isfinite(probs[1]))
    assert_same_as_cpu(lambda t: t.softmax(-1), x[1:], device=gpu_device)
    # A non-contiguous input takes the unfused path on every device alike.
    assert_same_as_cpu(lambda t: t.transpose(0, 2).softmax(-1), x[1:], device=gpu_device)


# ---- the numba kernels against the math -----------------------------------------------------


def fast_and_math(x, grad, empty_row_value: float, device: str = "cpu"):
    """(fast y, math y, fast dx, math dx) on the host; asserts the fast path exists."""
    x_there, grad_there = on(device, x), on(device, grad)
    assert registry.lookup("softmax", x_there) is not None
    y = softmax_forward(x_there, -1, empty_row_value)
    dx = softmax_backward(grad_there, y)
    with op_math():
        y_math = softmax_forward(x, -1, empty_row_value)
        dx_math = softmax_backward(grad, y_math)
    return to_device(y, "cpu"), y_math, to_device(dx, "cpu"), dx_math


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=9),
       empty_row_value=st.sampled_from([0.0, np.nan]))
def test_softmax_kernels_match_the_math(dtype, data, shape, empty_row_value):
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-30, 30, width=32)))
    if data.draw(st.booleans()):  # masked entries, some rows entirely
        x = np.where(data.draw(hnp.arrays(np.bool_, shape)), x, -np.inf).astype(dtype)
    grad = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-3, 3, width=32)))
    with np.errstate(invalid="ignore"):
        y, y_math, dx, dx_math = fast_and_math(x, grad, empty_row_value)
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_allclose(y, y_math, **TOLERANCE[np.dtype(dtype)])
    np.testing.assert_allclose(dx, dx_math, **TOLERANCE[np.dtype(dtype)])
    empty = np.all(np.isneginf(x), axis=-1)
    if empty_row_value == 0.0:
        np.testing.assert_allclose(y.sum(axis=-1), np.where(empty, 0.0, 1.0), rtol=1e-5)
    else:
        assert np.all(np.isnan(y[empty])) and np.all(np.isfinite(y[~empty]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_softmax_drivers_on_big_inputs(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((512, 256)) * 3).astype(dtype)
    assert x.size >= softmax_kernels.PARALLEL_MIN_ELEMENTS
    y, y_math, dx, dx_math = fast_and_math(x, rng.standard_normal(x.shape).astype(dtype), 0.0)
    np.testing.assert_allclose(y, y_math, **TOLERANCE[np.dtype(dtype)])
    np.testing.assert_allclose(dx, dx_math, **TOLERANCE[np.dtype(dtype)])
    serial = np.empty_like(y)
    softmax_kernels._forward_serial(x, serial, 0.0)
    np.testing.assert_array_equal(serial, y)


def test_softmax_declines_other_axes_layouts_and_dtypes():
    x = np.zeros((4, 6))
    assert registry.lookup("softmax", x, dim=1) is not None
    assert registry.lookup("softmax", x, dim=0) is None
    assert registry.lookup("softmax", x[:, ::2]) is None
    assert registry.lookup("softmax", x.astype(np.float16)) is None
    assert registry.lookup("softmax", np.zeros((3, 0))) is None


def test_plain_softmax_keeps_nan_for_all_masked_rows_and_attention_gives_zeros():
    x = np.array([[0.0, 1.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    for dim in (-1, 0):
        with np.errstate(invalid="ignore"):
            out = autograd.Tensor(x).softmax(dim).numpy()
        np.testing.assert_allclose(out[0, :2], np.exp([0, 1]) / np.exp([0, 1]).sum()
                                   if dim == -1 else [1.0, 1.0])
        assert np.all(np.isnan(out[1] if dim == -1 else out[:, 2]))
    q = autograd.Tensor(np.ones((2, 3)), requires_grad=True)
    mask = np.array([[True, True], [False, False]])
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    out.sum().backward()
    np.testing.assert_array_equal(out.numpy()[1], 0.0)
    assert np.all(np.isfinite(q.grad.numpy()))


# ---- the CUDA kernels (a real GPU, or emulated on the CPU) --------------------------------


def with_empty_rows(x: np.ndarray) -> np.ndarray:
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


CUDA_TOLERANCE = {np.float32: dict(rtol=4e-6, atol=1e-6), np.float64: dict(rtol=1e-13,
                                                                            atol=1e-15)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (4, 1), (3, 5), (2, 3, 33), (5, 300), (2, 257)],
                         ids=str)
@pytest.mark.parametrize("empty_row_value", [0.0, np.nan])
def test_softmax_cuda_kernels_match_the_math(kernel_leg, dtype, shape, empty_row_value):
    rng = np.random.default_rng(0)
    x = with_empty_rows(rng.standard_normal(shape) * 4).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    with np.errstate(invalid="ignore"):
        y, y_math, dx, dx_math = fast_and_math(x, grad, empty_row_value, "cuda")
    assert y.dtype == dx.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, y_math, **CUDA_TOLERANCE[dtype])
    if empty_row_value == 0.0:  # NaN rows give NaN gradients
        np.testing.assert_allclose(dx, dx_math, **CUDA_TOLERANCE[dtype])
    empty = np.all(np.isneginf(x), axis=-1)
    np.testing.assert_allclose(y[~empty].sum(axis=-1), 1.0,
                               rtol=1e-5 if dtype == np.float32 else 1e-13)


def test_softmax_rows_past_the_grid_loop_over_blocks(kernel_leg, monkeypatch):
    # More rows than blocks: each block walks over several rows (the grid-stride loop).
    monkeypatch.setattr(softmax_kernels, "MAX_BLOCKS", 2)
    rng = np.random.default_rng(5)
    x = with_empty_rows(rng.standard_normal((7, 40)) * 4)
    y, y_math, dx, dx_math = fast_and_math(x, rng.standard_normal(x.shape), 0.0, "cuda")
    np.testing.assert_allclose(y, y_math, **CUDA_TOLERANCE[np.float64])
    np.testing.assert_allclose(dx, dx_math, **CUDA_TOLERANCE[np.float64])


def test_softmax_cuda_threads_per_row_are_a_power_of_two_up_to_256():
    for length, threads in [(1, 32), (32, 32), (33, 64), (100, 128), (256, 256),
                            (100_000, 256)]:
        assert softmax_kernels._row_launch(3, length) == ((3,), (threads,))
    assert softmax_kernels._row_launch(10**6, 5)[0] == (softmax_kernels.MAX_BLOCKS,)
