"""The convolution family: conv2d and conv_transpose2d. PyTorch's outputs and gradients, a
direct nested-loop definition, the adjoint identity between the two, gradient checks (each
with check_op's simulated-CuPy leg), errors, and modules; the im2col / col2im kernels beneath
them (numba, and the CUDA sources on a real GPU or emulated) against their NumPy references;
and the device legs of the ops (cpu, cuda-sim, cuda, cuda-emulated) against the CPU's
reference kernels.

The kernels: autograd/kernels/conv.py and autograd/kernels/cuda/conv.cu; the op:
autograd/ops/conv.py."""

from __future__ import annotations

import fake_cupy
import numba
import numpy as np
import pytest
from device_testing import (
    CHANNELS_LAST,
    DTYPES,
    SIMULATOR_TOLERANCE,
    check_on_device,
    cuda_host,
    normal,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from kernel_testing import num_threads
from module_testing import check_module
from op_testing import arrays, check_op, check_torch_case

import autograd
import autograd.nn.functional as F
from autograd import nn
from autograd.backend import get_array_module, to_device
from autograd.kernels import conv as kernels
from autograd.kernels import conv_gemm, pointwise, registry, winograd
from autograd.kernels.conv import Window
from autograd.ops import conv

# The CPU fast paths cut the batch into one part per thread (kernels/threads.py): 1 or 2.
THREADS = st.sampled_from(sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}))


TORCH_CASES = {
    "conv2d_s1_p1": lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1),
    "conv2d_s2_p1": lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
    "conv2d_dil2_p2": lambda x, w: F.conv2d(x, w, None, padding=2, dilation=2),
    "conv2d_same": lambda x, w, b: F.conv2d(x, w, b, padding="same"),
    "conv_transpose2d_s2_p1": lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2,
                                                                 padding=1),
}


@pytest.mark.parametrize("mode", ["compiled", "reference kernels", "one image per chunk"])
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name, mode, monkeypatch):
    if mode == "reference kernels":
        monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", "1")
    if mode == "one image per chunk":
        monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", 1)
    check_torch_case(name, TORCH_CASES[name])


# ---- a direct definition --------------------------------------------------------------------


def conv2d_direct(x, w, b, stride, padding, dilation, groups):
    """out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] xpad[n, g(o) C/g + c,
    y sh + i dh, x sw + j dw]; padding is ((top, bottom), (left, right))."""
    n, _, h, wd = x.shape
    out_channels, group_channels, kh, kw = w.shape
    (sh, sw), (dh, dw), ((top, bottom), (left, right)) = stride, dilation, padding
    xpad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, out_channels, ho, wo))
    for b_ in range(n):
        for o in range(out_channels):
            group = o // (out_channels // groups)
            for y in range(ho):
                for x_ in range(wo):
                    total = 0.0 if b is None else b[o]
                    for c in range(group_channels):
                        for i in range(kh):
                            for j in range(kw):
                                total += w[o, c, i, j] * xpad[b_, group * group_channels + c,
                                                              y * sh + i * dh, x_ * sw + j * dw]
                    out[b_, o, y, x_] = total
    return out


@st.composite
def conv_cases(draw, max_side: int = 7):
    """Arguments of a conv2d with a non-empty output: x, weight, bias shapes and options."""
    groups = draw(st.integers(1, 2))
    channels = groups * draw(st.integers(1, 4 // groups))
    out_channels = groups * draw(st.integers(1, 4 // groups))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    assume(all(n + 2 * p >= d * (k - 1) + 1 for n, p, d, k in
               zip(size, padding, dilation, kernel)))
    return dict(x=(draw(st.integers(1, 3)), channels, *size),
                weight=(out_channels, channels // groups, *kernel),
                bias=draw(st.booleans()), stride=stride, padding=padding,
                dilation=dilation, groups=groups)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_conv2d_matches_direct_definition(dtype, case, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(case["x"]), rng.standard_normal(case["weight"])
    b = rng.standard_normal(case["weight"][0]) if case["bias"] else None
    out = F.conv2d(autograd.Tensor(x.astype(dtype)), autograd.Tensor(w.astype(dtype)),
                   None if b is None else autograd.Tensor(b.astype(dtype)),
                   case["stride"], case["padding"], case["dilation"], case["groups"])
    (ph, pw) = case["padding"]
    expected = conv2d_direct(x, w, b, case["stride"], ((ph, ph), (pw, pw)),
                             case["dilation"], case["groups"])
    assert out.dtype == dtype
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.numpy(), expected, rtol=tolerance, atol=tolerance)


@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), seed=st.integers(0, 2**16))
def test_same_padding_puts_the_odd_row_below_and_the_odd_column_right(kernel, dilation, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, *kernel))
    out = F.conv2d(autograd.Tensor(x), autograd.Tensor(w), padding="same", dilation=dilation)
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    padding = tuple((t // 2, t - t // 2) for t in totals)
    assert out.shape == (2, 3, 5, 6)
    np.testing.assert_allclose(out.numpy(), conv2d_direct(x, w, None, (1, 1), padding,
                                                          dilation, 1), atol=1e-12)
    valid = F.conv2d(autograd.Tensor(x), autograd.Tensor(w), padding="valid")
    np.testing.assert_allclose(valid.numpy(), conv2d_direct(x, w, None, (1, 1),
                                                            ((0, 0), (0, 0)), (1, 1), 1),
                               atol=1e-12)


@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_conv_transpose2d_is_the_adjoint_of_conv2d(case, seed):
    """<conv2d(z, w), y> == <z, conv_transpose2d(y, w)> with output_padding restoring z's size."""
    rng = np.random.default_rng(seed)
    z, w = rng.standard_normal(case["x"]), rng.standard_normal(case["weight"])
    options = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    forward = F.conv2d(autograd.Tensor(z), autograd.Tensor(w), **options)
    y = rng.standard_normal(forward.shape)
    lost = tuple(n + 2 * p - d * (k - 1) - 1 - (o - 1) * s for n, p, d, k, o, s in zip(
        z.shape[2:], case["padding"], case["dilation"], w.shape[2:], forward.shape[2:],
        case["stride"]))
    assume(all(extra < max(s, d) for extra, s, d in zip(lost, case["stride"],
                                                        case["dilation"])))
    back = F.conv_transpose2d(autograd.Tensor(y), autograd.Tensor(w), output_padding=lost,
                              **options)
    assert back.shape == z.shape
    np.testing.assert_allclose(np.sum(forward.numpy() * y), np.sum(z * back.numpy()),
                               rtol=1e-10, atol=1e-10)


# ---- gradient checks --------------------------------------------------------------------------


def _conv_arrays(data, case):
    x = data.draw(arrays(case["x"]))
    w = data.draw(arrays(case["weight"]))
    b = data.draw(arrays((case["weight"][0],))) if case["bias"] else None
    return x, w, b


@given(data=st.data(), case=conv_cases())
def test_conv2d_gradients(data, case):
    x, w, b = _conv_arrays(data, case)
    options = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    inputs = (x, w) if b is None else (x, w, b)
    check_op(lambda *t: F.conv2d(*t, **options), *inputs, directional=x.size > 100)


@given(data=st.data(), case=conv_cases(max_side=5), output_padding=st.integers(0, 1))
def test_conv_transpose2d_gradients(data, case, output_padding):
    # conv_cases draws a conv; here its x shape is the transposed conv's input.
    groups = case["groups"]
    in_channels, out_per_group = case["x"][1], case["weight"][0] // groups
    weight_shape = (in_channels, out_per_group, *case["weight"][2:])
    output_padding = tuple(min(output_padding, max(s, d) - 1) for s, d in zip(
        case["stride"], case["dilation"]))
    assume(all((n - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1 for n, s, p, d, k, op in zip(
        case["x"][2:], case["stride"], case["padding"], case["dilation"], weight_shape[2:],
        output_padding)))
    x = data.draw(arrays(case["x"]))
    w = data.draw(arrays(weight_shape))
    b = data.draw(arrays((out_per_group * groups,))) if case["bias"] else None
    options = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    inputs = (x, w) if b is None else (x, w, b)
    check_op(lambda *t: F.conv_transpose2d(*t, output_padding=output_padding, **options),
             *inputs, directional=x.size > 100)


def test_skips_gradients_nobody_needs(monkeypatch):
    """A frozen input gets no gradient and its input gradient never runs (fast path or
    math); the weight's is exact."""
    rng = np.random.default_rng(0)
    x = autograd.Tensor(rng.standard_normal((2, 3, 6, 6)))
    w = autograd.Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    calls = []
    monkeypatch.setattr(conv_gemm, "input_grad_image", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(conv, "conv2d_input_grad_math", lambda *a, **k: calls.append(1))
    F.conv2d(x, w, padding=1).sum().backward()
    assert x.grad is None and not calls
    expected = sum(conv2d_direct(x.numpy(), np.eye(1, 4 * 27, k).reshape(4, 3, 3, 3), None,
                                 (1, 1), ((1, 1), (1, 1)), (1, 1), 1).sum()
                   for k in range(4 * 27))
    assert w.grad.shape == w.shape
    np.testing.assert_allclose(w.grad.numpy().sum(), expected, rtol=1e-10)


def test_float32_stays_float32_with_gradients():
    rng = np.random.default_rng(0)
    x = autograd.Tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32), requires_grad=True)
    w = autograd.Tensor(rng.standard_normal((3, 4, 3, 3)).astype(np.float32), requires_grad=True)
    w_t = w.transpose(0, 1)
    out = F.conv_transpose2d(F.conv2d(x, w_t, stride=2, padding=1), w_t, stride=2, padding=1)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == w.grad.dtype == np.float32


# ---- errors -----------------------------------------------------------------------------------

X = autograd.Tensor(np.zeros((2, 4, 5, 5)))
W = autograd.Tensor(np.zeros((6, 4, 3, 3)))


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.conv2d(X[0], W), ValueError, "4-D input"),
    (lambda: F.conv2d(X, W[0]), ValueError, "4-D weight"),
    (lambda: F.conv2d(X, W[:, :3]), ValueError, "4 channels"),
    (lambda: F.conv2d(X, W[:, :1], groups=3), ValueError, "groups=3 expects 3"),
    (lambda: F.conv2d(X, W[:5, :2], groups=2), ValueError, "divisible"),
    (lambda: F.conv2d(X, W, groups=0), ValueError, "groups"),
    (lambda: F.conv2d(X[:, :, :2, :2], W), ValueError, "larger than the padded input"),
    (lambda: F.conv2d(X, W, dilation=3), ValueError, "larger than the padded input"),
    (lambda: F.conv2d(X.float(), W), TypeError, "float32 and float64"),
    (lambda: F.conv2d(X, W, stride=0), ValueError, "stride must be positive"),
    (lambda: F.conv2d(X, W, stride=(1, -1)), ValueError, "stride must be positive"),
    (lambda: F.conv2d(X, W, padding=-1), ValueError, "padding"),
    (lambda: F.conv2d(X, W, padding="same", stride=2), ValueError, "stride 1"),
    (lambda: F.conv2d(X, W, stride=(1, 2, 3)), TypeError, "pair"),
    (lambda: F.conv2d(X, W, autograd.Tensor(np.zeros(5))), ValueError, "bias"),
    (lambda: F.conv_transpose2d(X, W), ValueError, "4 channels but weight"),
    (lambda: F.conv_transpose2d(X, W.transpose(0, 1), stride=0), ValueError, "stride"),
    (lambda: F.conv_transpose2d(X, W.transpose(0, 1), stride=2, output_padding=2),
     ValueError, "output_padding"),
    (lambda: F.conv_transpose2d(X[:, :, :1, :1], W.transpose(0, 1), padding=3),
     ValueError, "empty output"),
])
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- modules ----------------------------------------------------------------------------------


def test_conv_modules_init_like_pytorch():
    generator = np.random.default_rng(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, generator=generator)
    transposed = nn.ConvTranspose2d(8, 6, (4, 2), stride=2, groups=2, generator=generator)
    assert conv.weight.shape == (16, 8, 3, 3) and conv.bias.shape == (16,)
    assert transposed.weight.shape == (8, 3, 4, 2) and transposed.bias.shape == (6,)
    for module, fan_in in ((conv, 8 * 9), (transposed, 3 * 8)):
        bound = 1 / np.sqrt(fan_in)
        for p in (module.weight, module.bias):
            assert p.dtype == np.float32
            assert np.abs(p.numpy()).max() <= bound
            assert np.abs(p.numpy()).max() > 0.8 * bound  # drawn over the whole range
    assert nn.Conv2d(2, 2, 1, bias=False).bias is None
    assert len(list(nn.Conv2d(2, 2, 1, bias=False).parameters())) == 1
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)


@given(data=st.data(), bias=st.booleans(), stride=st.integers(1, 2))
def test_conv_module_gradients(data, bias, stride):
    conv = nn.Conv2d(2, 4, 3, stride=stride, padding=1, groups=2, bias=bias, dtype=np.float64)
    check_module(conv, data.draw(arrays((2, 2, 5, 4))), directional=True)
    transposed = nn.ConvTranspose2d(2, 3, 3, stride=stride, padding=1, bias=bias,
                                    output_padding=stride - 1, dtype=np.float64)
    out = transposed(autograd.Tensor(np.zeros((1, 2, 4, 3))))
    assert out.shape == (1, 3, 4 * stride, 3 * stride)
    check_module(transposed, data.draw(arrays((2, 2, 4, 3))), directional=True)


def test_conv_module_matches_functional():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, dtype=np.float64)
    x = autograd.Tensor(np.random.default_rng(3).standard_normal((2, 3, 7, 7)))
    np.testing.assert_array_equal(conv(x).numpy(), F.conv2d(x, conv.weight, conv.bias,
                                                            stride=2, padding=1).numpy())
    assert "kernel_size=(3, 3)" in repr(conv)


@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_both_input_gradient_methods_agree(case, seed):
    """Stride 1 with fewer output than input channels takes the flipped-kernel convolution;
    it must equal col2im(grad W^T)."""
    n, c, h, w = case["x"]
    assume(case["weight"][0] < c)
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal(case["weight"])
    out_hw = tuple(size + 2 * p - d * (k - 1) for size, p, d, k in zip(
        (h, w), case["padding"], case["dilation"], weight.shape[2:]))
    window = conv.Window(weight.shape[2:], (1, 1), case["padding"], case["dilation"], out_hw)
    grad = rng.standard_normal((n * out_hw[0] * out_hw[1], weight.shape[0]))
    matrices = conv_gemm.weight_matrices(weight, case["groups"])
    np.testing.assert_allclose(
        conv_gemm.input_grad_image(grad, weight, case["groups"], (n, h, w, c), window),
        conv_gemm._col2im_of_product(grad, matrices, (n, h, w, c), window), rtol=1e-10,
        atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=conv_cases(), seed=st.integers(0, 2**16), channels_last=st.booleans(),
       threads=THREADS)
def test_gemm_fast_paths_match_the_ops_math(dtype, case, seed, channels_last, threads):
    """The registered fast paths (im2col + matrix product, channels-last) compute what the
    op's own math (a sum over kernel taps) does: forward, input and weight gradient, the
    batch in one part or one per thread."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x"]).astype(dtype)
    if channels_last:  # the layout the UNet's activations have
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    weight = rng.standard_normal(case["weight"]).astype(dtype)
    bias = rng.standard_normal(weight.shape[0]).astype(dtype) if case["bias"] else None
    total = tuple(2 * p for p in case["padding"])
    out_hw = conv.output_size("conv2d", x.shape[2:], weight.shape[2:], case["stride"], total,
                              case["dilation"])
    window = conv.Window(weight.shape[2:], case["stride"], case["padding"], case["dilation"],
                         out_hw)
    grad = rng.standard_normal((x.shape[0], weight.shape[0], *out_hw)).astype(dtype)
    with num_threads(threads):
        check_fast_paths("gemm", x, weight, bias, grad, window=window, groups=case["groups"])


def check_fast_paths(kind: str, x, weight, bias, grad, **geometry) -> list:
    """The three fast paths of `kind` ("gemm", "winograd", "pointwise") against the op's math
    on the same arrays (float64 to 1e-11, float32 to 1e-4); returns the fast outputs."""
    dtype = x.dtype
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11,
                                                                            atol=1e-11)
    pairs = [(fast_path("conv2d", kind)(x, weight, bias, **geometry),
              conv.conv2d_math(x, weight, bias, **geometry)),
             (fast_path("conv2d_input_grad", kind)(grad, weight, x.shape, **geometry),
              conv.conv2d_input_grad_math(grad, weight, x.shape, **geometry)),
             (fast_path("conv2d_weight_grad", kind)(x, grad, **geometry),
              conv.conv2d_weight_grad_math(x, grad, **geometry))]
    for fast, math in pairs:
        assert fast.shape == math.shape and fast.dtype == math.dtype == dtype
        np.testing.assert_allclose(fast, math, **tolerance)
    return [fast for fast, _ in pairs]


def test_the_conv_fast_paths_are_registered_for_both_devices():
    """im2col + GEMM on both devices; Winograd and the 1x1 products first on the CPU."""
    for op in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"):
        run, *cpu_first = (fast_path(op, kind) for kind in ("gemm", "winograd", "pointwise"))
        assert registry.fast_paths(op) == {"cpu": [*cpu_first, run], "cuda": [run]}


def fast_path(op: str, kind: str):
    """The fast path of a conv op ("conv2d", ...) in the kernel module of `kind`."""
    module = {"gemm": conv_gemm, "winograd": winograd, "pointwise": pointwise}[kind]
    return vars(module)[f"{op}_{kind}"]


def recording_fast_paths(patch: pytest.MonkeyPatch) -> list:
    """Inside `patch`: every registry lookup's answer is appended to the returned list."""
    chosen, original = [], registry.lookup

    def noting(op, *arrays, **params):
        chosen.append(original(op, *arrays, **params))
        return chosen[-1]

    patch.setattr(registry, "lookup", noting)
    return chosen


def layout(x: np.ndarray, name: str) -> np.ndarray:
    """x (N, C, H, W) in NCHW, channels-last or neither (every other pixel of a wider one)."""
    if name == "channels_last":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if name == "strided":
        wider = np.repeat(x, 2, axis=3)
        return wider[..., ::2]
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5),
                       st.integers(1, 5)),
       out_channels=st.integers(1, 6), seed=st.integers(0, 2**16), bias=st.booleans(),
       layouts=st.tuples(*[st.sampled_from(["nchw", "channels_last", "strided"])] * 2),
       threads=THREADS)
def test_pointwise_fast_paths_match_the_ops_math(dtype, shape, out_channels, seed, bias,
                                                 layouts, threads):
    """The 1x1 products compute the op's math, forward, input and weight gradient, whatever
    the layouts of x and of the output gradient; outputs and input gradients channels-last."""
    rng = np.random.default_rng(seed)
    x = layout(rng.standard_normal(shape).astype(dtype), layouts[0])
    weight = rng.standard_normal((out_channels, shape[1], 1, 1)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype) if bias else None
    grad = layout(rng.standard_normal((shape[0], out_channels, *shape[2:])).astype(dtype),
                  layouts[1])
    window = Window((1, 1), (1, 1), (0, 0), (1, 1), shape[2:])
    with num_threads(threads):
        outputs = check_fast_paths("pointwise", x, weight, b, grad, window=window, groups=1)
    for image in outputs[:2]:
        assert image.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("change, takes", [
    ({}, True), ({"stride": (2, 1)}, False), ({"padding": (0, 1)}, False),
    ({"kernel": (1, 2)}, False), ({"groups": 2}, False)])
def test_pointwise_takes_only_1x1_stride_1_unpadded_single_group_convolutions(change, takes):
    settings = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1),
                "groups": 1, **change}
    groups = settings.pop("groups")
    window = Window(**settings, output=(4, 4))
    x = np.ones((1, 4, 4, 4), np.float32)
    weight = np.ones((4, 4 // groups, *window.kernel), np.float32)
    for op, first_two in (("conv2d", (x, weight)), ("conv2d_input_grad", (x, weight)),
                          ("conv2d_weight_grad", (x, x))):
        expected = fast_path(op, "pointwise" if takes else "gemm")
        assert registry.lookup(op, *first_two, window=window, groups=groups) is expected


WINOGRAD_WINDOW = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))


@pytest.mark.parametrize("change, takes", [
    ({}, True), ({"stride": (2, 1)}, False), ({"padding": (1, 0)}, False),
    ({"dilation": (1, 2)}, False), ({"kernel": (3, 1)}, False), ({"groups": 2}, False),
    ({"channels": winograd.MIN_CHANNELS - 1}, False)])
def test_winograd_takes_only_3x3_stride_1_padding_1_single_group_wide_convolutions(change,
                                                                                   takes):
    """Each of the three ops picks Winograd for its windows, when the convolution it computes
    reads at least MIN_CHANNELS channels; im2col otherwise, and the op's math for ints."""
    settings = {**WINOGRAD_WINDOW, "groups": 1, "channels": winograd.MIN_CHANNELS, **change}
    groups, channels = settings.pop("groups"), settings.pop("channels")
    window = Window(**settings, output=(5, 5))
    x, weight = (np.ones((1, channels, 5, 5), np.float32),
                 np.ones((channels, channels // groups, 3, 3), np.float32))
    for op, first_two in (("conv2d", (x, weight)), ("conv2d_input_grad", (x, weight)),
                          ("conv2d_weight_grad", (x, x))):
        expected = fast_path(op, "winograd" if takes else "gemm")
        assert registry.lookup(op, *first_two, window=window, groups=groups) is expected
        assert registry.lookup(op, *(a.astype(np.int64) for a in first_two), window=window,
                               groups=groups) is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 9),
                       st.integers(1, 9)),
       out_channels=st.integers(1, 6), seed=st.integers(0, 2**16), bias=st.booleans(),
       channels_last=st.booleans(), one_image_per_chunk=st.booleans(), threads=THREADS)
def test_winograd_fast_paths_match_the_ops_math(dtype, shape, out_channels, seed, bias,
                                                channels_last, one_image_per_chunk, threads):
    """F(2x2, 3x3) computes the op's math (a sum over kernel taps), forward, input and
    weight gradient, at odd and even sizes (edge tiles), in one chunk or one image per
    chunk, the batch in one part or one per thread."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    weight = rng.standard_normal((out_channels, shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype) if bias else None
    grad = rng.standard_normal((shape[0], out_channels, *shape[2:])).astype(dtype)
    chunk = 1 if one_image_per_chunk else winograd.CHUNK_BYTES
    with pytest.MonkeyPatch.context() as patch, num_threads(threads):
        patch.setattr(winograd, "CHUNK_BYTES", chunk)
        check_fast_paths("winograd", x, weight, b, grad,
                         window=Window(**WINOGRAD_WINDOW, output=shape[2:]), groups=1)


@given(data=st.data(), batch=st.integers(1, 2), size=st.tuples(st.integers(1, 5),
                                                                 st.integers(1, 5)),
       extra=st.tuples(st.integers(0, 2), st.integers(0, 2)), transposed=st.booleans())
def test_gradients_through_winograd(data, batch, size, extra, transposed):
    """A 3x3 padding-1 convolution (or transposed convolution) wide enough for Winograd:
    every one of its three ops runs Winograd, and the gradients match finite differences."""
    channels, out_channels = (winograd.MIN_CHANNELS + e for e in extra)
    x = data.draw(arrays((batch, channels, *size)))
    w = data.draw(arrays((channels, out_channels, 3, 3) if transposed
                         else (out_channels, channels, 3, 3)))
    run = F.conv_transpose2d if transposed else F.conv2d
    with pytest.MonkeyPatch.context() as patch:
        chosen = recording_fast_paths(patch)
        check_op(lambda *t: run(*t, padding=1), x, w, directional=True, device_legs=False)
    assert {path.__module__ for path in chosen} == {winograd.__name__}
    assert len({path.__name__ for path in chosen}) == 3


@given(data=st.data(), shape=st.tuples(st.integers(1, 2), st.integers(1, 3),
                                       st.integers(1, 4), st.integers(1, 4)),
       out_channels=st.integers(1, 3), bias=st.booleans(), transposed=st.booleans())
def test_gradients_through_the_pointwise_products(data, shape, out_channels, bias, transposed):
    """A 1x1 convolution (or transposed convolution): each of its three ops runs the 1x1
    products, and the gradients match finite differences."""
    x = data.draw(arrays(shape))
    w = data.draw(arrays((shape[1], out_channels, 1, 1) if transposed
                         else (out_channels, shape[1], 1, 1)))
    b = data.draw(arrays((out_channels,))) if bias else None
    run = F.conv_transpose2d if transposed else F.conv2d
    with pytest.MonkeyPatch.context() as patch:
        chosen = recording_fast_paths(patch)
        check_op(lambda *t: run(*t), *([x, w, b] if bias else [x, w]), directional=True,
                 device_legs=False)
    assert {path.__module__ for path in chosen if path is not None} == {pointwise.__name__}
    assert len({path.__name__ for path in chosen if path is not None}) == 3


def test_winograd_float32_error_is_near_that_of_im2col():
    """At a mnist-tiny layer (32 -> 32 channels, 28 px, batch 4), Winograd's float32 results
    are about as close to the float64 convolution as im2col's, relative to the largest
    value (measured: forward 2.2e-7 against 6.9e-7; weight gradient, a sum over every tile,
    5.8e-7 against 3.5e-7: its transformed tiles are sums of up to 4 pixels each)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 28, 28))
    weight = rng.standard_normal((32, 32, 3, 3)) / np.sqrt(9 * 32)
    grad = rng.standard_normal((4, 32, 28, 28))
    geometry = dict(window=Window(**WINOGRAD_WINDOW, output=(28, 28)), groups=1)
    cases = [((x, weight, None), conv_gemm.conv2d_gemm, winograd.conv2d_winograd, 1),
             ((x, grad), conv_gemm.conv2d_weight_grad_gemm,
              winograd.conv2d_weight_grad_winograd, 2)]
    for arguments, im2col, fast, times_im2col in cases:
        exact = im2col(*arguments, **geometry)
        single = [None if a is None else a.astype(np.float32) for a in arguments]
        scale = np.abs(exact).max()
        error_winograd = np.abs(fast(*single, **geometry) - exact).max() / scale
        error_im2col = np.abs(im2col(*single, **geometry) - exact).max() / scale
        assert error_winograd < 2e-6 and error_winograd < times_im2col * error_im2col, (
            fast.__name__, error_winograd, error_im2col)


# ---- the im2col / col2im kernels (numba) against their references ------------------------


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


# ---- the im2col / col2im CUDA kernels against their references ---------------------------
# kernel_leg: "cuda" (a real GPU) and "cuda-emulated" (the CUDA sources compiled for the CPU
# by tests/cuda_emulator.py, the launchers' arguments checked against the C signatures).

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


CUDA_TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: SIMULATOR_TOLERANCE}


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
        cols = kernels.im2col(to_device(x, "cuda"), window, pad_value)
        assert cols.dtype == dtype
        np.testing.assert_array_equal(cuda_host(cols),
                                      kernels.im2col_reference(x, window, pad_value))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_col2im_matches_the_reference(kernel_leg, name, dtype):
    shape, window = window_of(GEOMETRIES[name])
    rng = np.random.default_rng(1)
    cols = rng.standard_normal(kernels.im2col_reference(np.zeros(shape), window).shape)
    cols = cols.astype(dtype)
    expected = kernels.col2im_reference(cols, shape, window)
    device_cols = to_device(cols, "cuda")
    image = kernels.col2im(device_cols, shape, window)
    assert image.dtype == dtype and image.shape == shape
    np.testing.assert_allclose(cuda_host(image), expected, **CUDA_TOLERANCE[dtype])
    # Into `out`: one image of a larger batch (contiguous), as conv's chunks do.
    xp = get_array_module(device_cols)
    batch = xp.full((shape[0] + 2, *shape[1:]), 7.0, dtype)
    written = kernels.col2im(device_cols, shape, window, out=batch[1:1 + shape[0]])
    np.testing.assert_array_equal(cuda_host(written), cuda_host(image))
    np.testing.assert_array_equal(cuda_host(batch)[[0, -1]], 7.0)
    np.testing.assert_array_equal(cuda_host(batch)[1:1 + shape[0]], cuda_host(image))


def test_conv_kernels_take_non_contiguous_inputs_but_not_integers(kernel_leg):
    shape, window = window_of(GEOMETRIES["3x3"])
    x = np.random.default_rng(2).standard_normal((*shape[:3], 2 * shape[3]))
    view = to_device(x, "cuda")[..., ::2]
    np.testing.assert_array_equal(cuda_host(kernels.im2col(view, window)),
                                  kernels.im2col_reference(x[..., ::2], window))
    assert registry.lookup("im2col", to_device(np.ones(shape, np.int64), "cuda")) is None


def test_conv_kernel_geometry_beyond_int_indices_is_refused():
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), (50_000, 50_000))
    with pytest.raises(ValueError, match="too large for the kernels' int indices"):
        kernels._geometry((1, 50_000, 50_000, 1), window)
    assert kernels._geometry((2, 5, 6, 3), window_of(GEOMETRIES["3x3"])[1])[:4] == (2, 5, 6, 3)


# ---- the ops on every device ----------------------------------------------------------------
# check_on_device: output and gradients against the CPU's reference kernels, float32 and
# float64, NCHW and channels-last, and the output in the CPU's memory order. The "cpu" leg
# checks the numba paths, "cuda-sim" that the device code runs on CuPy arrays alone (no host
# transfer), "cuda" the CUDA kernels and cuBLAS, "emulated" the CUDA sources compiled for the
# CPU (the layouts the op hands its launchers).

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


@CHANNELS_LAST
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CONVOLUTIONS))
def test_convolutions_on_every_device(device, name, dtype, channels_last, monkeypatch):
    fn, shapes = CONVOLUTIONS[name]
    check_on_device(fn, [normal(*s) for s in shapes], device, dtype, channels_last, monkeypatch)


@pytest.mark.parametrize("name", ["strided, dilated, 2 groups, bias",
                                  "transposed, stride 2, output padding, bias"])
def test_convolutions_one_image_per_chunk(device, name, monkeypatch):
    """The chunked loops (each device's chunk size) give the unchunked result."""
    monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", 1)
    monkeypatch.setattr(conv_gemm, "DEVICE_COLUMN_CHUNK_BYTES", 1)
    fn, shapes = CONVOLUTIONS[name]
    check_on_device(fn, [normal(*s) for s in shapes], device, np.float64, False, monkeypatch)


def test_a_training_batch_is_one_chunk_on_the_gpu():
    images, per_image = 128, 28 * 28 * 9 * 64 * 4  # columns of a 3x3 conv, 64 ch, 28 px
    gpu_array = fake_cupy.ndarray(np.zeros(1))
    assert len(conv_gemm._image_chunks(range(images), per_image, gpu_array)) == 1
    assert len(conv_gemm._image_chunks(range(images), per_image, np.zeros(1))) > 1


@CHANNELS_LAST
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CONVOLUTIONS))
def test_convolutions_on_the_emulated_cuda_kernels(emulated, name, dtype, channels_last,
                                                   monkeypatch):
    fn, shapes = CONVOLUTIONS[name]
    check_on_device(fn, [normal(*s) for s in shapes], emulated, dtype, channels_last,
                    monkeypatch)
