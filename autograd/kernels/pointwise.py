"""1x1 convolutions (stride 1, no padding) on the CPU: three matrix products per image, read
in the memory layout the arrays already have.

A 1x1 convolution mixes channels pixel by pixel: image n's output is W (O, C) times its
(C, H*W) pixels. im2col (`conv_gemm.py`) first copies x into channels-last order, and for
NCHW input (a user's arrays, PyTorch's layout) that transposing copy took as long as the
product (96 -> 32 channels at 28 px). Here every operand is a view,
(N, C, H*W) or (N, H*W, C), whichever layout it has: BLAS reads either as a matrix or its
transpose, so nothing is copied. Outputs and input gradients are channels-last, as
`conv_gemm`'s, so the next convolution and GroupNorm read them in place.

    forward       out[n]  = x[n]^T W^T              (H*W, O)
    input grad    dx[n]   = dout[n]^T W             (H*W, C)
    weight grad   dW      = sum_n dout[n] x[n]^T    (O, C)

The batch is split into one part per thread (`threads.map_parts`); the weight gradient's
parts are summed in order.
"""

from __future__ import annotations

import numpy as np

from autograd.kernels.conv import Window, channels_first
from autograd.kernels.registry import floating, register
from autograd.kernels.threads import map_parts, ordered_sum


def takes(window: Window, groups: int) -> bool:
    """1x1 windows with stride 1 and no padding, one group: the output has the input's
    size and each output pixel reads only its own input pixel."""
    return (window.kernel == (1, 1) and window.stride == (1, 1) and window.padding == (0, 0)
            and groups == 1)


def _supports(first, second, window: Window, groups: int) -> bool:
    return floating(first, second) and takes(window, groups)


def _pixels(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> an (N, C, H*W) view for NCHW and channels-last memory alike (a copy
    only for other strides)."""
    return x.reshape(*x.shape[:2], -1)


def _per_image(a: np.ndarray, matrix: np.ndarray, out_channels: int) -> np.ndarray:
    """a (N, K, H*W), matrix (K, M) -> (N, H*W, M) contiguous: a[n]^T @ matrix per image."""
    out = np.empty((a.shape[0], a.shape[2], out_channels), a.dtype)

    def part(images: range) -> None:
        np.matmul(a[images.start:images.stop].transpose(0, 2, 1), matrix,
                  out=out[images.start:images.stop])

    map_parts(part, a.shape[0])
    return out


def _as_nchw(rows: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H*W, C) -> an (N, C, H, W) view of the same (channels-last) memory."""
    return channels_first(rows.reshape(rows.shape[0], height, width, rows.shape[2]))


@register("conv2d", "cpu", supports=_supports)
def conv2d_pointwise(x, weight, bias, window: Window, groups: int):
    """conv2d_math's fast path for `takes` windows: (N, C, H, W) -> (N, O, H, W)."""
    matrix = weight.reshape(weight.shape[0], -1)
    out = _per_image(_pixels(x), matrix.T, matrix.shape[0])
    if bias is not None:
        out += bias.astype(out.dtype, copy=False)
    return _as_nchw(out, *x.shape[2:])


@register("conv2d_input_grad", "cpu", supports=_supports)
def conv2d_input_grad_pointwise(grad, weight, input_shape: tuple[int, ...], window: Window,
                                groups: int):
    """conv2d_input_grad_math's fast path: dout (N, O, H, W) -> dx (N, C, H, W)."""
    matrix = weight.reshape(weight.shape[0], -1)
    return _as_nchw(_per_image(_pixels(grad), matrix, matrix.shape[1]), *input_shape[2:])


@register("conv2d_weight_grad", "cpu", supports=_supports)
def conv2d_weight_grad_pointwise(x, grad, window: Window, groups: int):
    """conv2d_weight_grad_math's fast path: x (N, C, H, W), dout (N, O, H, W) -> dW (O, C,
    1, 1), each thread's images summed on their own, then the parts in order."""
    x_pixels, grad_pixels = _pixels(x), _pixels(grad)

    def part(images: range) -> np.ndarray:
        chunk = slice(images.start, images.stop)
        return np.matmul(grad_pixels[chunk], x_pixels[chunk].transpose(0, 2, 1)).sum(axis=0)

    return ordered_sum(map_parts(part, x.shape[0]))[:, :, None, None]
