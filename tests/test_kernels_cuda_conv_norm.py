"""The device legs of the im2col / col2im and group-norm kernel dispatchers, against their
references computed on the CPU, on awkward geometries and layouts.

Legs: "cuda" (a real GPU: the CUDA kernels of kernels/cuda/conv.cu and norm.cu; skipped
without one), "cuda-sim" (the simulated CuPy: the references, on device arrays) and
"cuda-emulated" (the same CUDA sources compiled for the CPU by tests/cuda_emulator.py, with
the launchers' arguments checked against the kernels' C signatures; skipped without g++).
"""

from __future__ import annotations

import cuda_emulator
import fake_cupy
import numpy as np
import pytest

from autograd.backend import array_module, device_of, get_array_module, to_device
from autograd.kernels import conv, norm
from autograd.kernels.activation import silu_reference
from autograd.kernels.conv import Window


def host(array) -> np.ndarray:
    assert device_of(array) == "cuda", f"a result on {device_of(array)}"
    return to_device(array, "cpu")


def tolerance(dtype) -> dict:
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)


# ---- im2col / col2im ----------------------------------------------------------------------

# (N, H, W, C), kernel, stride, padding, dilation, extra rows/columns of padding below/right
GEOMETRIES = {
    "3x3": ((2, 5, 6, 3), (3, 3), (1, 1), (1, 1), (1, 1), (0, 0)),
    "padding beyond the kernel": ((1, 3, 4, 2), (2, 2), (1, 1), (3, 4), (1, 1), (0, 1)),
    "stride > kernel": ((2, 7, 8, 3), (2, 1), (3, 4), (0, 1), (1, 1), (0, 0)),
    "dilation": ((1, 7, 6, 2), (3, 2), (1, 2), (2, 1), (2, 3), (1, 0)),
    "1x1": ((3, 4, 3, 5), (1, 1), (1, 1), (0, 0), (1, 1), (0, 0)),
    "1x1 strided and padded": ((2, 5, 4, 3), (1, 1), (2, 2), (1, 1), (1, 1), (0, 0)),
    "7 channels, odd sizes": ((2, 5, 3, 7), (3, 2), (2, 1), (1, 1), (1, 2), (1, 1)),
    "one pixel": ((1, 1, 1, 1), (3, 3), (1, 1), (1, 1), (1, 1), (0, 0)),
}


def window_of(geometry) -> tuple[tuple[int, ...], Window]:
    shape, kernel, stride, padding, dilation, extra = geometry
    output = tuple((n + 2 * p + e - d * (k - 1) - 1) // s + 1 for n, p, e, d, k, s in
                   zip(shape[1:3], padding, extra, dilation, kernel, stride))
    assert min(output) >= 1
    return shape, Window(kernel, stride, padding, dilation, output)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_im2col_matches_the_reference(kernel_leg, name, dtype):
    shape, window = window_of(GEOMETRIES[name])
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for pad_value in (0.0, -np.inf, 2.5):
        cols = conv.im2col(to_device(x, "cuda"), window, pad_value)
        assert cols.dtype == dtype
        np.testing.assert_array_equal(host(cols), conv.im2col_reference(x, window, pad_value))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_col2im_matches_the_reference(kernel_leg, name, dtype):
    shape, window = window_of(GEOMETRIES[name])
    rng = np.random.default_rng(1)
    cols = rng.standard_normal(conv.im2col_reference(np.zeros(shape), window).shape)
    cols = cols.astype(dtype)
    expected = conv.col2im_reference(cols, shape, window)
    device_cols = to_device(cols, "cuda")
    image = conv.col2im(device_cols, shape, window)
    assert image.dtype == dtype and image.shape == shape
    np.testing.assert_allclose(host(image), expected, **tolerance(dtype))
    # Into `out`: one image of a larger batch (contiguous), as conv's chunks do.
    xp = get_array_module(device_cols)
    batch = xp.full((shape[0] + 2, *shape[1:]), 7.0, dtype)
    written = conv.col2im(device_cols, shape, window, out=batch[1:1 + shape[0]])
    np.testing.assert_array_equal(host(written), host(image))
    np.testing.assert_array_equal(host(batch)[[0, -1]], 7.0)
    np.testing.assert_array_equal(host(batch)[1:1 + shape[0]], host(image))


def test_conv_kernels_take_non_contiguous_inputs_and_reject_integers(kernel_leg):
    shape, window = window_of(GEOMETRIES["3x3"])
    x = np.random.default_rng(2).standard_normal((*shape[:3], 2 * shape[3]))
    view = to_device(x, "cuda")[..., ::2]
    np.testing.assert_array_equal(host(conv.im2col(view, window)),
                                  conv.im2col_reference(x[..., ::2], window))
    if kernel_leg != "cuda-sim":  # the references take any dtype
        with pytest.raises(TypeError, match="float32 or float64"):
            conv.im2col(to_device(np.ones(shape, np.int64), "cuda"), window)


# ---- group norm ---------------------------------------------------------------------------

# (N, C, M, groups)
NORM_CASES = {
    "groups of 2 channels": (2, 6, 5, 3),
    "M = 1, 7 channels": (3, 7, 1, 1),
    "groups of one channel": (2, 5, 9, 5),
    "more channels per group than threads": (1, 300, 2, 1),
    "more positions than threads": (2, 3, 700, 3),
    "one value": (1, 1, 1, 1),
}
LAYOUTS = ["contiguous", "channels_last", "strided"]


def norm_input(shape, layout: str, dtype, rng) -> tuple[np.ndarray, object]:
    """A host (N, C, M) array and its device copy with the given memory layout."""
    values = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    if layout == "channels_last":
        memory = to_device(np.ascontiguousarray(values.transpose(0, 2, 1)), "cuda")
        return values, memory.transpose(0, 2, 1)
    if layout == "strided":
        memory = array_module("cuda").zeros((*shape[:2], 2 * shape[2]), dtype)
        memory[..., ::2] = to_device(values, "cuda")
        return values, memory[..., ::2]
    return values, to_device(values, "cuda")


def layout_of(array) -> str:
    if array.flags.c_contiguous:
        return "contiguous"
    return "channels_last" if array.transpose(0, 2, 1).flags.c_contiguous else "strided"


def expected_layout(layout: str, shape) -> str:
    """The kernels' output layout for an input of `layout`: the same, or C-contiguous."""
    n, c, m = shape
    if layout == "channels_last" and min(c, m) > 1:
        return "channels_last"
    return "contiguous"


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(NORM_CASES))
def test_group_norm_forward_and_backward_match_the_references(kernel_leg, name, dtype, layout,
                                                               silu):
    n, c, m, groups = NORM_CASES[name]
    rng = np.random.default_rng(3)
    x, device_x = norm_input((n, c, m), layout, dtype, rng)
    grad, device_grad = norm_input((n, c, m), "contiguous", dtype, rng)
    weight, bias = (rng.standard_normal(c).astype(dtype) for _ in range(2))
    device_weight, device_bias = to_device(weight, "cuda"), to_device(bias, "cuda")

    y, mean, rstd = norm.group_norm_forward(device_x, device_weight, device_bias, groups,
                                            1e-5, silu)
    y_ref, mean_ref, rstd_ref = norm.group_norm_forward_reference(x, weight, bias, groups, 1e-5)
    y_ref = silu_reference(y_ref) if silu else y_ref
    assert y.dtype == mean.dtype == rstd.dtype == dtype
    assert y.shape == (n, c, m) and mean.shape == rstd.shape == (n, groups)
    for got, want in ((y, y_ref), (mean, mean_ref), (rstd, rstd_ref)):
        np.testing.assert_allclose(host(got), want, **tolerance(dtype))

    grads = norm.group_norm_backward(device_grad, device_x, mean, rstd, device_weight, groups,
                                     device_bias, silu)
    upstream = (norm._silu_gradient_reference(grad, x, mean_ref, rstd_ref, weight, bias, groups)
                if silu else grad)
    expected = norm.group_norm_backward_reference(upstream, x, mean_ref, rstd_ref, weight,
                                                  groups)
    for got, want, what in zip(grads, expected, ("dx", "dweight", "dbias")):
        assert got.dtype == dtype and got.shape == want.shape, what
        np.testing.assert_allclose(host(got), want, **tolerance(dtype), err_msg=what)
    if kernel_leg != "cuda-sim":  # the kernels keep x's layout (the references return C order)
        assert layout_of(y) == layout_of(grads[0]) == expected_layout(layout, (n, c, m))


def test_group_norm_backward_is_deterministic_and_takes_a_gradient_of_another_layout(kernel_leg):
    rng = np.random.default_rng(4)
    x, device_x = norm_input((2, 8, 30), "channels_last", np.float32, rng)
    grad, device_grad = norm_input((2, 8, 30), "strided", np.float32, rng)
    weight = to_device(rng.standard_normal(8).astype(np.float32), "cuda")
    _, mean, rstd = norm.group_norm_forward(device_x, weight, weight, 4, 1e-5)
    first = [host(a) for a in norm.group_norm_backward(device_grad, device_x, mean, rstd,
                                                       weight, 4)]
    again = [host(a) for a in norm.group_norm_backward(device_grad, device_x, mean, rstd,
                                                       weight, 4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    expected = norm.group_norm_backward_reference(grad, x, host(mean), host(rstd),
                                                  host(weight), 4)
    for got, want in zip(first, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_group_norm_kernels_check_their_arguments(kernel_leg):
    x = to_device(np.ones((2, 4, 3)), "cuda")
    weight = to_device(np.ones(4), "cuda")
    _, mean, rstd = norm.group_norm_forward(x, weight, weight, 2, 1e-5)
    with pytest.raises(ValueError, match="needs the bias"):
        norm.group_norm_backward(x, x, mean, rstd, weight, 2, silu=True)
    if kernel_leg != "cuda-sim":  # the references take any dtype
        with pytest.raises(TypeError, match="float32 or float64"):
            norm.group_norm_forward(to_device(np.ones((2, 4, 3), np.int64), "cuda"), weight,
                                    weight, 2, 1e-5)


@pytest.mark.parametrize("per_group", [1, 2, 3, 4, 7, 64, 100, 256, 300, 1000])
@pytest.mark.parametrize("m", [1, 2, 3, 31, 33, 784, 5000])
def test_backward_team_size_covers_a_group_in_one_pass_when_it_can(per_group, m):
    """Threads per channel: a power of two dividing the block, all channels of the group at
    once where the block has room, no more threads than positions (rounded up)."""
    team = norm._team_size(per_group, m)
    threads = norm.NORM_THREADS
    assert team >= 1 and team & (team - 1) == 0 and threads % team == 0
    assert team == 1 or team * per_group <= threads
    assert team >= m or 2 * team * per_group > threads  # as wide as it may be
    assert team < 2 * m  # no lane sure to idle


def test_conv_kernel_geometry_beyond_int_indices_is_refused():
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), (50_000, 50_000))
    with pytest.raises(ValueError, match="too large for the kernels' int indices"):
        conv._geometry((1, 50_000, 50_000, 1), window)
    assert conv._geometry((2, 5, 6, 3), window_of(GEOMETRIES["3x3"])[1])[:4] == (2, 5, 6, 3)


# ---- the emulator itself ------------------------------------------------------------------

EMULATOR_PROBE = """
extern "C" __global__ void block_sum(const REAL* x, REAL* out, long long n) {
    __shared__ REAL partial[64];
    partial[threadIdx.x] = threadIdx.x < n ? x[blockIdx.x * n + threadIdx.x] : REAL(0);
    __syncthreads();
    if (threadIdx.x == 0) {
        REAL total = 0;
        for (unsigned t = 0; t < blockDim.x; ++t) total += partial[t];
        out[blockIdx.x] = total;
    }
}
extern "C" __global__ void divergent(REAL* out) {
    if (threadIdx.x == 3) return;
    __syncthreads();
    out[threadIdx.x] = REAL(1);
}
"""


@pytest.mark.skipif(not cuda_emulator.available(), reason="the CUDA emulator needs g++")
def test_the_emulator_runs_barriers_and_checks_launches():
    module = cuda_emulator.EmulatedRawModule(code=EMULATOR_PROBE, options=("-DREAL=double",))
    with fake_cupy.simulated_cuda() as cp:
        x = cp.asarray(np.arange(12.0).reshape(3, 4))
        out = cp.zeros(3)
        module.get_function("block_sum")((3,), (64,), (x, out, np.int64(4)))
        np.testing.assert_array_equal(out.get(), [6.0, 22.0, 38.0])
        with pytest.raises(TypeError, match="must be numpy.int64, got int"):
            module.get_function("block_sum")((3,), (64,), (x, out, 4))
        with pytest.raises(TypeError, match="must hold float64, got float32"):
            module.get_function("block_sum")((3,), (64,), (x.astype(np.float32), out,
                                                           np.int64(4)))
        with pytest.raises(RuntimeError, match="divergent barrier"):
            module.get_function("divergent")((1,), (8,), (cp.zeros(8),))
