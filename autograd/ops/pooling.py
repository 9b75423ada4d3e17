"""Average and max pooling, and nearest-neighbour resizing.

Pooling reuses the convolution's im2col / col2im (channels-last): the windows of every
output pixel are a (N*ho*wo, kh*kw, C) array, reduced over the middle axis, and backward
is col2im of the gradient spread over the window. Like the convolutions, outputs are
NCHW-shaped views of channels-last arrays, and the code is the same on every device.
"""

from __future__ import annotations

import numpy as np

from autograd.backend import get_array_module
from autograd.function import Function
from autograd.kernels.conv import Window, channels_first, channels_last, col2im, im2col
from autograd.ops.conv import output_size, pair, positive_pair
from autograd.tensor import Tensor

# ---- pooling ------------------------------------------------------------------------------


class AvgPool2d(Function):
    def __init__(self, window: Window) -> None:
        self.window = window

    def forward(self, x):
        self.input_shape = x.shape
        kernel_taps = self.window.kernel[0] * self.window.kernel[1]
        taps = im2col(channels_last(x), self.window).reshape(-1, kernel_taps, x.shape[1])
        out = taps.mean(axis=1, dtype=x.dtype)
        return channels_first(out.reshape(x.shape[0], *self.window.output, x.shape[1]))

    def backward(self, grad):  # out = mean over the window: each tap gets grad / (kh kw)
        xp = get_array_module(grad)
        n, c, h, w = self.input_shape
        kernel_taps = self.window.kernel[0] * self.window.kernel[1]
        share = channels_last(grad).reshape(-1, 1, c) / kernel_taps
        spread = xp.broadcast_to(share, (share.shape[0], kernel_taps, c))
        dcols = xp.ascontiguousarray(spread).reshape(share.shape[0], -1)
        return channels_first(col2im(dcols, (n, h, w, c), self.window))


class MaxPool2d(Function):
    def __init__(self, window: Window) -> None:
        self.window = window

    def forward(self, x):
        self.input_shape = x.shape
        kernel_taps = self.window.kernel[0] * self.window.kernel[1]
        taps = im2col(channels_last(x), self.window, pad_value=-np.inf)
        taps = taps.reshape(-1, kernel_taps, x.shape[1])
        argmax = taps.argmax(axis=1)[:, None, :]  # (N*ho*wo, 1, C)
        self.save_for_backward(argmax)
        out = get_array_module(x).take_along_axis(taps, argmax, axis=1)
        return channels_first(out.reshape(x.shape[0], *self.window.output, x.shape[1]))

    def backward(self, grad):  # out = x[argmax]: the gradient goes to the argmax tap only
        xp, (argmax,) = get_array_module(grad), self.saved
        n, c, h, w = self.input_shape
        kernel_taps = self.window.kernel[0] * self.window.kernel[1]
        dcols = xp.zeros((argmax.shape[0], kernel_taps, c), grad.dtype)
        xp.put_along_axis(dcols, argmax, channels_last(grad).reshape(-1, 1, c), axis=1)
        return channels_first(col2im(dcols.reshape(dcols.shape[0], -1), (n, h, w, c),
                                     self.window))


def _pool_window(op: str, x: Tensor, kernel_size, stride, padding) -> Window:
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got {x.dtype}")
    kernel = positive_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else positive_pair(stride, "stride")
    padding = pair(padding, "padding")
    if min(padding) < 0 or any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be >= 0 and at most half the "
                         f"kernel {kernel}")
    total = (2 * padding[0], 2 * padding[1])
    out_hw = output_size(op, x.shape[2:], kernel, stride, total, (1, 1))
    return Window(kernel, stride, padding, (1, 1), out_hw)


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """Mean over each kh x kw window (zero padding counted): (N, C, H, W) -> (N, C, ho, wo).
    stride defaults to kernel_size."""
    return AvgPool2d.apply(x, window=_pool_window("avg_pool2d", x, kernel_size, stride,
                                                  padding))


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """Max over each kh x kw window (padding is -inf): (N, C, H, W) -> (N, C, ho, wo).
    stride defaults to kernel_size."""
    return MaxPool2d.apply(x, window=_pool_window("max_pool2d", x, kernel_size, stride,
                                                  padding))


# ---- nearest-neighbour resizing -----------------------------------------------------------


class NearestResize(Function):
    """out[..., y, x] = in[..., source_rows[y], source_columns[x]], the indices given by
    `_source_index` for output size `size` (and `scales`, when given)."""

    def __init__(self, size: tuple[int, int], scales: tuple) -> None:
        self.size, self.scales = size, scales

    def _source_indices(self, in_hw, xp) -> tuple:
        """(source_rows, source_columns), computed with xp: on the arrays' device."""
        return tuple(_source_index(n, o, s, xp) for n, o, s in zip(in_hw, self.size,
                                                                   self.scales))

    def _integer_factors(self, in_hw) -> tuple[int, int] | None:
        """(fy, fx) when every source pixel is repeated fy x fx times, else None (decided
        on the host, from the host's copy of the indices)."""
        indices = self._source_indices(in_hw, np)
        factors = tuple(len(index) // n for index, n in zip(indices, in_hw))
        exact = all(f >= 1 and np.array_equal(index, np.arange(len(index)) // f)
                    for index, f in zip(indices, factors))
        return factors if exact else None

    def forward(self, x):
        xp = get_array_module(x)
        self.input_shape = x.shape
        x_last = channels_last(x)
        factors = self._integer_factors(x.shape[2:])
        if factors is not None:  # a broadcast copy, no gather
            fy, fx = factors
            n, h, w, c = x_last.shape
            spread = xp.broadcast_to(x_last[:, :, None, :, None], (n, h, fy, w, fx, c))
            out = spread.reshape(n, h * fy, w * fx, c)
        else:
            rows, columns = self._source_indices(x.shape[2:], xp)
            out = x_last[:, rows[:, None], columns[None, :]]
        return channels_first(out)

    def backward(self, grad):  # each source pixel gets the sum over its copies
        xp = get_array_module(grad)
        n, c, h, w = self.input_shape
        grad_last = channels_last(grad)
        factors = self._integer_factors((h, w))
        if factors is not None:
            fy, fx = factors
            return channels_first(grad_last.reshape(n, h, fy, w, fx, c).sum(axis=(2, 4)))
        source_rows, source_columns = self._source_indices((h, w), xp)
        rows = xp.zeros((h, len(source_rows)), grad.dtype)  # one-hot sum matrices
        rows[source_rows, xp.arange(len(source_rows))] = 1
        columns = xp.zeros((w, len(source_columns)), grad.dtype)
        columns[source_columns, xp.arange(len(source_columns))] = 1
        return xp.einsum("yY,xX,nYXc->ncyx", rows, columns, grad_last, optimize=True)


def _source_index(in_size: int, out_size: int, scale: float | None, xp=np):
    """PyTorch's 'nearest': floor(out_index * in/out), with 1/scale_factor when given."""
    step = 1.0 / scale if scale is not None else in_size / out_size
    index = xp.floor(xp.arange(out_size, dtype=np.float64) * step).astype(np.intp)
    return xp.minimum(index, in_size - 1)


def interpolate(x: Tensor, size=None, scale_factor=None, mode: str = "nearest") -> Tensor:
    """Resize (N, C, H, W) to `size` (int or (h, w)) or by `scale_factor` (number or pair):
    out size floor(H * scale_factor). Only mode='nearest' (PyTorch's index rule)."""
    if mode != "nearest":
        raise NotImplementedError(f"interpolate mode {mode!r}: only 'nearest' is implemented")
    if x.ndim != 4:
        raise ValueError(f"interpolate: expected a 4-D input (N, C, H, W), got {x.shape}")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    in_hw = x.shape[2:]
    if size is not None:
        out_hw, scales = positive_pair(size, "size"), (None, None)
    else:
        scales = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (
            scale_factor, scale_factor)
        if len(scales) != 2 or not all(s > 0 for s in scales):
            raise ValueError(f"interpolate: scale_factor must be positive, got {scale_factor}")
        out_hw = tuple(int(np.floor(n * s)) for n, s in zip(in_hw, scales))
        if min(out_hw) < 1:
            raise ValueError(f"interpolate: scale_factor {scale_factor} leaves an empty "
                             f"output for input {x.shape}")
    return NearestResize.apply(x, size=tuple(out_hw), scales=tuple(scales))
