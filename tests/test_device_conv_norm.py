"""Convolutions, pooling and resizing on every device (the norms: tests/test_norm.py):
output and gradients
against the CPU with the reference kernels (AUTOGRAD_REFERENCE_KERNELS=1), on the same
inputs, float32 and float64, NCHW and channels-last inputs.

So the "cpu" leg checks the numba path against the references, "cuda" (a real GPU) the CUDA
kernels and CuPy, and "cuda-sim" that the device code path runs on CuPy arrays alone: with
no host transfer in forward or backward, and outputs in the layout the CPU gives. The last
test runs every case once more with the CUDA kernels themselves, compiled for the CPU by
tests/cuda_emulator.py (the layouts the ops hand their launchers).
"""

from __future__ import annotations

from collections import Counter

import cuda_emulator
import fake_cupy
import numpy as np
import pytest
from device_testing import counts_transfers

import autograd.nn.functional as F
from autograd.backend import to_device
from autograd.ops import conv
from autograd.tensor import Tensor


def device_array(host: np.ndarray, device: str, channels_last: bool):
    """`host` on `device`; a 4-D array with channels-last memory when asked."""
    if channels_last and host.ndim == 4:
        return to_device(np.ascontiguousarray(host.transpose(0, 2, 3, 1)),
                         device).transpose(0, 3, 1, 2)
    return to_device(host, device)


def run(fn, inputs: list[np.ndarray], device: str, channels_last: bool, seed: int = 0):
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


def check(fn, inputs: list[np.ndarray], device: str, dtype, channels_last: bool,
          monkeypatch, layout: bool = True) -> None:
    """fn's output and gradients on `device` equal the CPU's reference-kernel run."""
    inputs = [a.astype(dtype) for a in inputs]
    with monkeypatch.context() as env:
        env.setenv("AUTOGRAD_REFERENCE_KERNELS", "1")
        expected, expected_grads, expected_out = run(fn, inputs, "cpu", channels_last)
    out, grads, out_tensor = run(fn, inputs, device, channels_last)
    # Other summation orders (references, cuBLAS) differ by rounding, relative to the
    # largest terms of a sum: a share of the largest entry joins the absolute tolerance.
    rtol, share = (2e-4, 2e-5) if dtype == np.float32 else (1e-10, 1e-11)
    assert out.dtype == dtype and out.shape == expected.shape
    for i, (got, want) in enumerate(zip([out, *grads], [expected, *expected_grads])):
        assert got.dtype == dtype and got.shape == want.shape
        atol = share * max(1.0, float(np.abs(want).max(initial=0.0)))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol,
                                   err_msg="output" if i == 0 else f"gradient of input {i - 1}")
    if layout:  # the same memory order (NCHW views of channels-last arrays...)
        assert np.argsort(out_tensor.data.strides).tolist() == \
            np.argsort(expected_out.data.strides).tolist()


DTYPES = [np.float32, np.float64]
LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])


def normal(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape)


# ---- convolutions -------------------------------------------------------------------------

CONVOLUTIONS = {
    "3x3 padded, bias": (lambda x, w, b: F.conv2d(x, w, b, padding=1),
                         [(2, 4, 7, 6), (6, 4, 3, 3), (6,)]),
    "strided, dilated, 2 groups, bias": (
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=(1, 0), dilation=(1, 2), groups=2),
        [(2, 4, 8, 7), (6, 2, 3, 2), (6,)]),
    "1x1": (lambda x, w: F.conv2d(x, w), [(2, 6, 5, 5), (4, 6, 1, 1)]),
    "1x1, 2 groups": (lambda x, w: F.conv2d(x, w, groups=2), [(2, 4, 5, 3), (4, 2, 1, 1)]),
    "same, dilated, fewer outputs (flipped-kernel gradient)": (
        lambda x, w: F.conv2d(x, w, padding="same", dilation=2), [(2, 4, 6, 7), (3, 4, 3, 3)]),
    "transposed, stride 2, output padding, bias": (
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
        [(2, 4, 5, 4), (4, 3, 3, 3), (3,)]),
    "transposed, dilated, 2 groups": (
        lambda x, w: F.conv_transpose2d(x, w, groups=2, dilation=2),
        [(2, 4, 4, 5), (4, 2, 2, 3)]),
}


@LAYOUTS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CONVOLUTIONS))
def test_convolutions(device, name, dtype, channels_last, monkeypatch):
    fn, shapes = CONVOLUTIONS[name]
    check(fn, [normal(*s) for s in shapes], device, dtype, channels_last, monkeypatch)


@pytest.mark.parametrize("name", ["strided, dilated, 2 groups, bias",
                                  "transposed, stride 2, output padding, bias"])
def test_convolutions_one_image_per_chunk(device, name, monkeypatch):
    """The chunked loops (each device's chunk size) give the unchunked result."""
    monkeypatch.setattr(conv, "COLUMN_CHUNK_BYTES", 1)
    monkeypatch.setattr(conv, "DEVICE_COLUMN_CHUNK_BYTES", 1)
    fn, shapes = CONVOLUTIONS[name]
    check(fn, [normal(*s) for s in shapes], device, np.float64, False, monkeypatch)


def test_a_training_batch_is_one_chunk_on_the_gpu():
    images, per_image = 128, 28 * 28 * 9 * 64 * 4  # columns of a 3x3 conv, 64 ch, 28 px
    gpu_array = fake_cupy.ndarray(np.zeros(1))
    assert len(conv._image_chunks(images, per_image, gpu_array)) == 1
    assert len(conv._image_chunks(images, per_image, np.zeros(1))) > 1


# ---- pooling and resizing -----------------------------------------------------------------

POOLING = {
    "avg 3 s2 p1": lambda x: F.avg_pool2d(x, 3, stride=2, padding=1),
    "avg 2": lambda x: F.avg_pool2d(x, 2),
    "max 3 s2 p1": lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
    "max 2 s1": lambda x: F.max_pool2d(x, 2, stride=1),
    "nearest x2": lambda x: F.interpolate(x, scale_factor=2),
    "nearest to 5x9": lambda x: F.interpolate(x, size=(5, 9)),
    "nearest x1.5": lambda x: F.interpolate(x, scale_factor=1.5),
}


@LAYOUTS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(POOLING))
def test_pooling_and_resizing(device, name, dtype, channels_last, monkeypatch):
    check(POOLING[name], [normal(2, 3, 7, 6)], device, dtype, channels_last, monkeypatch)


# ---- the CUDA kernels, emulated on the CPU ------------------------------------------------

ALL_CASES = {**{name: fn for name, (fn, _) in CONVOLUTIONS.items()},
             **POOLING}
SHAPES = {**{name: shapes for name, (_, shapes) in CONVOLUTIONS.items()},
          **{name: [(2, 3, 7, 6)] for name in POOLING}}


@pytest.fixture
def emulated():
    if not cuda_emulator.available():
        pytest.skip("the CUDA emulator needs g++")
    with cuda_emulator.emulated_cuda():
        yield "cuda"


@LAYOUTS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_ops_on_the_emulated_cuda_kernels(emulated, name, dtype, channels_last, monkeypatch):
    inputs = [normal(*s) * 1.5 + 0.3 for s in SHAPES[name]]
    check(ALL_CASES[name], inputs, emulated, dtype, channels_last, monkeypatch)
