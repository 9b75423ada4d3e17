"""avg_pool2d, max_pool2d and nearest interpolate: PyTorch's outputs and gradients, direct
definitions, gradient checks, errors, modules, and the ops on every device."""

from __future__ import annotations

import numpy as np
import pytest
from device_testing import CHANNELS_LAST, DTYPES, check_on_device, normal
from hypothesis import assume, given
from hypothesis import strategies as st
from op_testing import arrays, check_op, check_torch_case

import autograd
import autograd.nn.functional as F
from autograd import nn

TORCH_CASES = {
    "avg_pool2d_2": lambda x: F.avg_pool2d(x, 2),
    "max_pool2d_3_s2_p1": lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
    "interpolate_nearest2": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
}


@pytest.mark.parametrize("reference_kernels", [False, True])
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name, reference_kernels, monkeypatch):
    if reference_kernels:
        monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", "1")
    check_torch_case(name, TORCH_CASES[name])


# ---- direct definitions -----------------------------------------------------------------------


def pool_direct(x, reduce, kernel, stride, padding, fill):
    """out[n, c, y, x] = reduce(xpad[n, c, y sh : y sh + kh, x sw : x sw + kw])."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho = (xpad.shape[2] - kh) // sh + 1
    wo = (xpad.shape[3] - kw) // sw + 1
    out = np.empty(x.shape[:2] + (ho, wo))
    for y in range(ho):
        for x_ in range(wo):
            out[:, :, y, x_] = reduce(xpad[:, :, y * sh:y * sh + kh, x_ * sw:x_ * sw + kw],
                                      axis=(2, 3))
    return out


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 2), st.integers(1, 2))))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
             draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    assume(all(n + 2 * p >= k for n, p, k in zip(shape[2:], padding, kernel)))
    return shape, kernel, stride, padding


def distinct_values(data, shape):
    """Values at least 0.01 apart, so max pooling has no ties (a kink)."""
    order = data.draw(st.permutations(range(int(np.prod(shape)))))
    return (np.array(order, np.float64).reshape(shape) - np.prod(shape) / 2) * 0.01


@pytest.mark.parametrize("kind", ["avg", "max"])
@given(data=st.data(), case=pool_cases())
def test_pooling_matches_direct_definition_and_gradients(kind, data, case):
    shape, kernel, stride, padding = case
    x = distinct_values(data, shape)
    pool = F.avg_pool2d if kind == "avg" else F.max_pool2d
    out = pool(autograd.Tensor(x), kernel, stride, padding)
    reduce, fill = (np.mean, 0.0) if kind == "avg" else (np.max, -np.inf)
    expected = pool_direct(x, reduce, kernel, stride or kernel, padding, fill)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    check_op(lambda t: pool(t, kernel, stride, padding), x, directional=x.size > 100)


@given(data=st.data(), shape=st.tuples(st.integers(1, 2), st.integers(1, 3),
                                        st.integers(1, 5), st.integers(1, 5)),
       resize=st.one_of(
           st.builds(lambda f: {"scale_factor": f}, st.sampled_from([1, 2, 3, 0.5, 1.5, 2.5])),
           st.builds(lambda h, w: {"size": (h, w)}, st.integers(1, 9), st.integers(1, 9))))
def test_interpolate_nearest(data, shape, resize):
    if "scale_factor" in resize:
        assume(min(shape[2:]) * resize["scale_factor"] >= 1)
    x = data.draw(arrays(shape))
    out = F.interpolate(autograd.Tensor(x), **resize)
    # PyTorch's rule: source index floor(out_index * scale), scale = 1 / scale_factor
    # (or in / out for size=), clipped to the last row / column.
    if "size" in resize:
        out_hw = resize["size"]
        scales = [n / o for n, o in zip(shape[2:], out_hw)]
    else:
        out_hw = [int(np.floor(n * resize["scale_factor"])) for n in shape[2:]]
        scales = [1 / resize["scale_factor"]] * 2
    rows, cols = (np.minimum((np.arange(o) * s).astype(int), n - 1)
                  for o, s, n in zip(out_hw, scales, shape[2:]))
    np.testing.assert_array_equal(out.numpy(), x[:, :, rows][:, :, :, cols])
    check_op(lambda t: F.interpolate(t, **resize), x, directional=x.size > 100)


@pytest.mark.parametrize("call, error, message", [
    (lambda x: F.avg_pool2d(x[0], 2), ValueError, "4-D input"),
    (lambda x: F.max_pool2d(x, 0), ValueError, "kernel_size must be positive"),
    (lambda x: F.max_pool2d(x, 2, stride=0), ValueError, "stride must be positive"),
    (lambda x: F.max_pool2d(x, 2, padding=2), ValueError, "half the kernel"),
    (lambda x: F.avg_pool2d(x, 7), ValueError, "larger than the padded input"),
    (lambda x: F.avg_pool2d(x.long(), 2), TypeError, "floating"),
    (lambda x: F.interpolate(x), ValueError, "exactly one"),
    (lambda x: F.interpolate(x, size=4, scale_factor=2), ValueError, "exactly one"),
    (lambda x: F.interpolate(x, scale_factor=-1), ValueError, "positive"),
    (lambda x: F.interpolate(x, size=(0, 3)), ValueError, "positive"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), NotImplementedError,
     "nearest"),
    (lambda x: F.interpolate(x[0], scale_factor=2), ValueError, "4-D input"),
])
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(autograd.Tensor(np.zeros((1, 2, 5, 5))))


def test_modules():
    x = autograd.Tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    np.testing.assert_array_equal(nn.AvgPool2d(3, 1, 1)(x).numpy(),
                                  F.avg_pool2d(x, 3, 1, 1).numpy())
    np.testing.assert_array_equal(nn.MaxPool2d(2)(x).numpy(), F.max_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(nn.Upsample(scale_factor=2)(x).numpy(),
                                  F.interpolate(x, scale_factor=2).numpy())
    assert nn.Upsample(size=(4, 5))(x).shape == (2, 3, 4, 5)
    assert "kernel_size=2" in repr(nn.MaxPool2d(2))
    assert not list(nn.MaxPool2d(2).parameters())


# ---- the ops on every device ----------------------------------------------------------------
# check_on_device (see tests/test_conv.py): against the CPU's reference kernels, float32 and
# float64, NCHW and channels-last, on cpu, cuda-sim, cuda and the emulated CUDA sources (the
# ops run on the CUDA elementwise kernels there; pooling has none of its own).

POOLING = {
    "avg 3 s2 p1": lambda x: F.avg_pool2d(x, 3, stride=2, padding=1),
    "avg 2": lambda x: F.avg_pool2d(x, 2),
    "max 3 s2 p1": lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
    "max 2 s1": lambda x: F.max_pool2d(x, 2, stride=1),
    "nearest x2": lambda x: F.interpolate(x, scale_factor=2),
    "nearest to 5x9": lambda x: F.interpolate(x, size=(5, 9)),
    "nearest x1.5": lambda x: F.interpolate(x, scale_factor=1.5),
}


@CHANNELS_LAST
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(POOLING))
def test_pooling_and_resizing_on_every_device(device, name, dtype, channels_last, monkeypatch):
    check_on_device(POOLING[name], [normal(2, 3, 7, 6)], device, dtype, channels_last, monkeypatch)


@CHANNELS_LAST
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(POOLING))
def test_pooling_and_resizing_on_the_emulated_cuda_kernels(emulated, name, dtype,
                                                           channels_last, monkeypatch):
    check_on_device(POOLING[name], [normal(2, 3, 7, 6) * 1.5 + 0.3], emulated, dtype,
                    channels_last, monkeypatch)
