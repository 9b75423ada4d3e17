"""The device legs of the im2col / col2im fast paths, against their references computed on
the CPU, on awkward geometries and layouts (the group-norm kernels: tests/test_norm.py), and
the CUDA emulator itself.

Legs: "cuda" (a real GPU: the CUDA kernels of kernels/cuda/conv.cu; skipped without one) and
"cuda-emulated" (the same CUDA sources compiled for the CPU by tests/cuda_emulator.py, with
the launchers' arguments checked against the kernels' C signatures; skipped without g++).
"""

from __future__ import annotations

import cuda_emulator
import fake_cupy
import numpy as np
import pytest
from device_testing import cuda_host

from autograd.backend import get_array_module, to_device
from autograd.kernels import conv, registry
from autograd.kernels.conv import Window


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
        np.testing.assert_array_equal(cuda_host(cols), conv.im2col_reference(x, window, pad_value))


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
    np.testing.assert_allclose(cuda_host(image), expected, **tolerance(dtype))
    # Into `out`: one image of a larger batch (contiguous), as conv's chunks do.
    xp = get_array_module(device_cols)
    batch = xp.full((shape[0] + 2, *shape[1:]), 7.0, dtype)
    written = conv.col2im(device_cols, shape, window, out=batch[1:1 + shape[0]])
    np.testing.assert_array_equal(cuda_host(written), cuda_host(image))
    np.testing.assert_array_equal(cuda_host(batch)[[0, -1]], 7.0)
    np.testing.assert_array_equal(cuda_host(batch)[1:1 + shape[0]], cuda_host(image))


def test_conv_kernels_take_non_contiguous_inputs_but_not_integers(kernel_leg):
    shape, window = window_of(GEOMETRIES["3x3"])
    x = np.random.default_rng(2).standard_normal((*shape[:3], 2 * shape[3]))
    view = to_device(x, "cuda")[..., ::2]
    np.testing.assert_array_equal(cuda_host(conv.im2col(view, window)),
                                  conv.im2col_reference(x[..., ::2], window))
    assert registry.lookup("im2col", to_device(np.ones(shape, np.int64), "cuda")) is None


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
