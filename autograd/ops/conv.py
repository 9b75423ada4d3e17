"""2-D convolution and transposed convolution: the math, forward and backward.

Within each group of channels, output pixel (y, x) of channel o is a sum over input
channels c and kernel taps (i, j) of the zero-padded input, s the stride and d the dilation:

    out[n, o, y, x] = b[o] + sum_{c,i,j} W[o, c, i, j] * xpad[n, c, y*s + i*d, x*s + j*d]

so each tap (i, j) is one matrix product of W[:, :, i, j] with a strided view of xpad, and
the three functions below are a loop over the kh * kw taps. A transposed convolution is
the input gradient of a convolution: its forward is `conv2d_input_grad_math`, its input
gradient `conv2d_math` and its weight gradient `conv2d_weight_grad_math` with the roles of
input and output swapped.

The fast paths beneath compute the same: Winograd F(2x2, 3x3) for 3x3 stride-1 padding-1
convolutions on the CPU (`kernels/winograd.py`, "conv2d" and "conv2d_input_grad"), and
otherwise im2col + one BLAS matrix product per chunk of images, channels-last
(`kernels/conv_gemm.py`, all three); these functions run where neither does
(AUTOGRAD_REFERENCE_KERNELS=1, or arrays of a module without fast paths) and are what the
tests compare them with.
"""

from __future__ import annotations

import numpy as np

from autograd.backend import get_array_module
from autograd.function import Function
from autograd.kernels import registry
from autograd.kernels.conv import Window, padding_extents, tap_slices
from autograd.ops.elementwise import as_tensors
from autograd.tensor import Tensor

# ---- geometry ------------------------------------------------------------------------------


def pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints, as (height, width)."""
    pair_ = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair_) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair_):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair_[0]), int(pair_[1])


def positive_pair(value, name: str) -> tuple[int, int]:
    pair_ = pair(value, name)
    if min(pair_) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair_


def output_size(op: str, size: tuple[int, int], kernel: tuple[int, int],
                stride: tuple[int, int], padding_total: tuple[int, int],
                dilation: tuple[int, int]) -> tuple[int, int]:
    """floor((size + padding - dilation * (kernel - 1) - 1) / stride) + 1 per dim."""
    out = tuple((n + p - d * (k - 1) - 1) // s + 1
                for n, k, s, p, d in zip(size, kernel, stride, padding_total, dilation))
    if min(out) < 1:
        reach = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        padded = tuple(n + p for n, p in zip(size, padding_total))
        raise ValueError(f"{op}: the kernel (reach {reach} with dilation) is larger than "
                         f"the padded input {padded}")
    return out


# ---- the math: a sum over the kernel's taps (NumPy or CuPy, NCHW) -------------------------


def _padded(x, window: Window, groups: int):
    """x (N, C, H, W) zero-padded so that every tap's slice fits: (N, g, C/g, Hp, Wp)."""
    xp = get_array_module(x)
    padded = xp.pad(x, [(0, 0), (0, 0), *padding_extents(window, x.shape[2:])])
    return padded.reshape(x.shape[0], groups, -1, *padded.shape[2:])


def _taps(weight, window: Window, groups: int):
    """(rows, cols, W[:, :, i, j] per group (g, O/g, C/g)) for each kernel tap (i, j)."""
    per_group = weight.reshape(groups, -1, *weight.shape[1:])
    for i in range(window.kernel[0]):
        for j in range(window.kernel[1]):
            yield (*tap_slices(window, i, j), per_group[..., i, j])


def conv2d_math(x, weight, bias, window: Window, groups: int):
    """x (N, C, H, W), weight (O, C/g, kh, kw), bias (O,) or None -> out (N, O, ho, wo)."""
    # out[n, o, y, x] = b[o] + sum_{c,i,j} W[o, c, i, j] xpad[n, c, y*s + i*d, x*s + j*d]
    xp, padded = get_array_module(x), _padded(x, window, groups)
    out = xp.zeros((x.shape[0], groups, weight.shape[0] // groups, *window.output), x.dtype)
    for rows, cols, w_tap in _taps(weight, window, groups):
        out += xp.einsum("goc,ngcyx->ngoyx", w_tap, padded[..., rows, cols], optimize=True)
    out = out.reshape(x.shape[0], weight.shape[0], *window.output)
    return out if bias is None else out + bias[:, None, None]


def conv2d_input_grad_math(grad, weight, input_shape: tuple[int, ...], window: Window,
                           groups: int):
    """dout (N, O, ho, wo) -> dx of input_shape (N, C, H, W)."""
    # d out / d xpad[n, c, y*s + i*d, x*s + j*d] = W[o, c, i, j]: each tap adds W^T dout
    # back where it read, and the padding's share is dropped
    xp = get_array_module(grad)
    (top, bottom), (left, right) = padding_extents(window, input_shape[2:])
    n, c, h, w = input_shape
    dpadded = xp.zeros((n, groups, c // groups, top + h + bottom, left + w + right), grad.dtype)
    grad = grad.reshape(n, groups, -1, *window.output)
    for rows, cols, w_tap in _taps(weight, window, groups):
        dpadded[..., rows, cols] += xp.einsum("goc,ngoyx->ngcyx", w_tap, grad, optimize=True)
    return dpadded.reshape(n, c, *dpadded.shape[3:])[:, :, top:top + h, left:left + w]


def conv2d_weight_grad_math(x, grad, window: Window, groups: int):
    """x (N, C, H, W), dout (N, O, ho, wo) -> dW (O, C/g, kh, kw)."""
    # dW[o, c, i, j] = sum_{n,y,x} dout[n, o, y, x] xpad[n, c, y*s + i*d, x*s + j*d]
    xp, padded = get_array_module(x), _padded(x, window, groups)
    grad = grad.reshape(grad.shape[0], groups, -1, *window.output)
    dw = xp.empty((groups, grad.shape[2], padded.shape[2], *window.kernel), grad.dtype)
    for i in range(window.kernel[0]):
        for j in range(window.kernel[1]):
            rows, cols = tap_slices(window, i, j)
            dw[..., i, j] = xp.einsum("ngoyx,ngcyx->goc", grad, padded[..., rows, cols],
                                      optimize=True)
    return dw.reshape(-1, *dw.shape[2:])


def _run(op: str, math, *arrays, **params):
    """The registered fast path of `op` for these arrays if there is one, else `math`."""
    fast = registry.lookup(op, *arrays[:2], **params)
    return (math if fast is None else fast)(*arrays, **params)


# ---- the ops ------------------------------------------------------------------------------


class Conv2d(Function):
    def __init__(self, window: Window, groups: int) -> None:
        self.window, self.groups = window, groups

    def forward(self, x, weight, *bias):  # out = conv(x, W) + b
        self.save_for_backward(x, weight)
        return _run("conv2d", conv2d_math, x, weight, bias[0] if bias else None,
                    window=self.window, groups=self.groups)

    def backward(self, grad):  # dx = conv^T(dout, W), dW = dout * x, db = sum dout
        x, weight = self.saved
        geometry = dict(window=self.window, groups=self.groups)
        dx = dw = db = None
        if self.needs_input_grad[0]:
            dx = _run("conv2d_input_grad", conv2d_input_grad_math, grad, weight, x.shape,
                      **geometry)
        if self.needs_input_grad[1]:
            dw = _run("conv2d_weight_grad", conv2d_weight_grad_math, x, grad, **geometry)
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            db = grad.sum(axis=(0, 2, 3))
        return dx, dw, db


class ConvTranspose2d(Function):
    def __init__(self, window: Window, groups: int, output_shape: tuple[int, ...]) -> None:
        # `window` is that of the convolution this op transposes: output -> input.
        self.window, self.groups, self.output_shape = window, groups, output_shape

    def forward(self, x, weight, *bias):  # out = conv^T(x, W) + b: a conv's input gradient
        self.save_for_backward(x, weight)
        out = _run("conv2d_input_grad", conv2d_input_grad_math, x, weight, self.output_shape,
                   window=self.window, groups=self.groups)
        return out + bias[0][:, None, None] if bias else out

    def backward(self, grad):  # dx = conv(dout, W), dW = x * dout (conv's roles swapped)
        x, weight = self.saved
        geometry = dict(window=self.window, groups=self.groups)
        dx = dw = db = None
        if self.needs_input_grad[0]:
            dx = _run("conv2d", conv2d_math, grad, weight, None, **geometry)
        if self.needs_input_grad[1]:
            dw = _run("conv2d_weight_grad", conv2d_weight_grad_math, grad, x, **geometry)
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            db = grad.sum(axis=(0, 2, 3))
        return dx, dw, db


# ---- functions ----------------------------------------------------------------------------


def _check_operands(op: str, x: Tensor, weight: Tensor, bias: Tensor | None, groups,
                    in_channels_axis: int) -> tuple[Tensor, ...]:
    """Shared checks; returns (x, weight[, bias]) as tensors of one floating dtype."""
    operands = as_tensors(x, weight) if bias is None else as_tensors(x, weight, bias)
    x, weight = operands[:2]
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D weight, got shape {weight.shape}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got {x.dtype}")
    if in_channels_axis == 1:  # conv2d: weight (O, C/g, kh, kw)
        in_channels, out_channels = weight.shape[1] * groups, weight.shape[0]
    else:  # conv_transpose2d: weight (C_in, C_out/g, kh, kw)
        in_channels, out_channels = weight.shape[0], weight.shape[1] * groups
    if x.shape[1] != in_channels or weight.shape[0] % groups:
        raise ValueError(
            f"{op}: input has {x.shape[1]} channels but weight {weight.shape} with "
            f"groups={groups} expects {in_channels} (and {weight.shape[0]} divisible by "
            "groups)")
    if bias is not None and operands[2].shape != (out_channels,):
        raise ValueError(f"{op}: bias must have shape ({out_channels},), got "
                         f"{operands[2].shape}")
    return operands


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """x (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,) -> (N, O, ho, wo).

    stride, padding, dilation: ints or (h, w) pairs; padding may be "valid" (0) or "same"
    (stride 1 only; an odd total puts the extra row/column at the bottom/right, as PyTorch).
    """
    operands = _check_operands("conv2d", x, weight, bias, groups, in_channels_axis=1)
    x, weight = operands[:2]
    kernel = weight.shape[2:]
    stride, dilation = positive_pair(stride, "stride"), positive_pair(dilation, "dilation")
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' needs stride 1, got stride {stride}")
        total = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
        before = tuple(t // 2 for t in total)
    elif padding == "valid":
        total = before = (0, 0)
    else:
        before = pair(padding, "padding")
        if min(before) < 0:
            raise ValueError(f"conv2d: padding must be >= 0, got {padding!r}")
        total = (2 * before[0], 2 * before[1])
    out_hw = output_size("conv2d", x.shape[2:], kernel, stride, total, dilation)
    window = Window(kernel, stride, before, dilation, out_hw)
    return Conv2d.apply(*operands, window=window, groups=int(groups))


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """x (N, C_in, H, W), weight (C_in, C_out/groups, kh, kw), bias (C_out,) ->
    (N, C_out, (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1, ...),
    the adjoint of conv2d with the same arguments."""
    operands = _check_operands("conv_transpose2d", x, weight, bias, groups,
                               in_channels_axis=0)
    x, weight = operands[:2]
    kernel = weight.shape[2:]
    stride, dilation = positive_pair(stride, "stride"), positive_pair(dilation, "dilation")
    padding, output_padding = pair(padding, "padding"), pair(output_padding, "output_padding")
    if min(padding) < 0 or min(output_padding) < 0:
        raise ValueError(f"conv_transpose2d: padding {padding} and output_padding "
                         f"{output_padding} must be >= 0")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller "
                         f"than stride {stride} or dilation {dilation}")
    out_hw = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
                   zip(x.shape[2:], stride, padding, dilation, kernel, output_padding))
    if min(out_hw) < 1:
        raise ValueError(f"conv_transpose2d: padding {padding} leaves an empty output "
                         f"{out_hw} for input {x.shape}")
    window = Window(kernel, stride, padding, dilation, tuple(x.shape[2:]))
    out_channels = weight.shape[1] * groups
    return ConvTranspose2d.apply(*operands, window=window, groups=int(groups),
                                 output_shape=(x.shape[0], out_channels, *out_hw))
