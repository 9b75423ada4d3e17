"""im2col and col2im, channels-last: the copies around a convolution's matrix product
(numba on the CPU, CUDA C on the GPU: `kernels/cuda/conv.cu`), each beside a reference
written once against the array module.

Layout: for x of shape (N, H, W, C), the columns are an (N * ho * wo, kh * kw * C) matrix
whose row (n, y, x) is the receptive field of output pixel (y, x) of image n, tap (i, j)
then channel c, so `cols @ weight (kh * kw * C, O)` is the output, channels-last. In this
layout each tap copies C contiguous values (NCHW would copy wo values per tap and row, and
was 3-4x slower here). im2col pads on the fly (the padded input never exists); col2im is
its adjoint, a scatter-add back to (N, H, W, C) (on the GPU a gather: one thread per input
value sums the column entries that read it, with no atomics). Convolution, its gradients,
the transposed convolution and pooling all use these two.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from autograd.backend import get_array_module
from autograd.kernels import cuda, registry
from autograd.kernels.jit import cpu_kernel
from autograd.kernels.registry import register

# OpenBLAS threads spin for a while after each matrix product; a numba parallel region
# started then fights them for the 2 cores (measured: 8 ms stalls). Compiled kernels
# therefore run on the calling thread only; see benchmarks/README.md.
PARALLEL = False


class Window(NamedTuple):
    """Where each output pixel reads: output pixel (y, x) and kernel tap (i, j) read input
    pixel (y * stride - pad_before + i * dilation, ...) per spatial dim, with `pad_value`
    outside the input. `output` is the output's spatial size (ho, wo)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]  # (top, left); the extent below / right is implied by output
    dilation: tuple[int, int]
    output: tuple[int, int]

    def scalars(self) -> tuple[int, ...]:
        """kh, kw, sh, sw, ph, pw, dh, dw, ho, wo: the arguments of the compiled kernels."""
        return (*self.kernel, *self.stride, *self.padding, *self.dilation, *self.output)


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> contiguous (N, H, W, C); free when x is a channels-last view."""
    return get_array_module(x).ascontiguousarray(x.transpose(0, 2, 3, 1))


def channels_first(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> an (N, C, H, W) view of the same memory."""
    return x.transpose(0, 3, 1, 2)


def flipped_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """(O, C/g, kh, kw) -> (C, O/g, kh, kw): each group's kernel with in and out swapped
    and rotated by 180 degrees, the kernel of the stride-1 input gradient."""
    out_channels, group_channels, kh, kw = weight.shape
    per_group = weight.reshape(groups, out_channels // groups, group_channels, kh, kw)
    flipped = per_group.transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return flipped.reshape(groups * group_channels, out_channels // groups, kh, kw)



# ---- compiled kernels ---------------------------------------------------------------------


@cpu_kernel(parallel=PARALLEL)
def _im2col_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, pad_value, cols):
    n, h, w, c = x.shape
    for image_row in numba.prange(n * ho):
        b = image_row // ho
        oy = image_row - b * ho
        for ox in range(wo):
            field = cols[image_row * wo + ox]
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                for j in range(kw):
                    ix = ox * sw - pw + j * dw
                    # Element loops over views, which LLVM vectorises: slice assignment
                    # was 3.5x slower. (Measured: even renaming these variables can cost
                    # 3x here; benchmarks/bench_layers.py shows the speedup to keep.)
                    dst = field[(i * kw + j) * c:(i * kw + j + 1) * c]
                    if 0 <= iy < h and 0 <= ix < w:
                        src = x[b, iy, ix]
                        for k in range(c):
                            dst[k] = src[k]
                    else:
                        for k in range(c):
                            dst[k] = pad_value


@cpu_kernel(parallel=PARALLEL)
def _col2im_kernel(cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, out):
    n, h, w, c = out.shape
    for b in numba.prange(n):  # one image per task: no two tasks write one pixel
        out[b] = 0
        for oy in range(ho):
            for ox in range(wo):
                row = (b * ho + oy) * wo + ox
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pw + j * dw
                        if 0 <= ix < w:
                            start = (i * kw + j) * c
                            for k in range(c):  # plain indexing: 2.3x faster than views
                                out[b, iy, ix, k] += cols[row, start + k]


# ---- references (NumPy or CuPy) -----------------------------------------------------------


def padding_extents(window: Window, size: tuple[int, int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim that keeps every tap inside the array."""
    extents = []
    for k, s, p, d, o, n in zip(window.kernel, window.stride, window.padding,
                                window.dilation, window.output, size):
        reach = (o - 1) * s + (k - 1) * d + 1  # rows the windows span, from the padded top
        extents.append((p, max(0, reach - p - n)))
    return extents


def tap_slices(window: Window, i: int, j: int) -> tuple[slice, slice]:
    """The (y, x) slices of the padded input that tap (i, j) reads, one per output pixel:
    rows i * dilation + y * stride for y < ho (and so for columns)."""
    (sh, sw), (dh, dw), (ho, wo) = window.stride, window.dilation, window.output
    return (slice(i * dh, i * dh + (ho - 1) * sh + 1, sh),
            slice(j * dw, j * dw + (wo - 1) * sw + 1, sw))


def im2col_reference(x: np.ndarray, window: Window, pad_value: float = 0.0) -> np.ndarray:
    """x (N, H, W, C) -> cols (N * ho * wo, kh * kw * C), with pad and strided slices."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    (kh, kw), (ho, wo) = window.kernel, window.output
    padded = xp.pad(x, [(0, 0), *padding_extents(window, (h, w)), (0, 0)],
                    constant_values=pad_value)
    cols = xp.empty((n, ho, wo, kh, kw, c), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = padded[(slice(None), *tap_slices(window, i, j))]
    return cols.reshape(n * ho * wo, kh * kw * c)


def col2im_reference(cols: np.ndarray, input_shape: tuple[int, ...],
                     window: Window) -> np.ndarray:
    """The adjoint of im2col: cols (N * ho * wo, kh * kw * C) -> (N, H, W, C), adding up
    every tap that read a pixel."""
    xp = get_array_module(cols)
    n, h, w, c = input_shape
    (kh, kw), (ho, wo) = window.kernel, window.output
    (top, bottom), (left, right) = padding_extents(window, (h, w))
    padded = xp.zeros((n, top + h + bottom, left + w + right, c), cols.dtype)
    taps = cols.reshape(n, ho, wo, kh, kw, c)
    for i in range(kh):
        for j in range(kw):
            padded[(slice(None), *tap_slices(window, i, j))] += taps[:, :, :, i, j]
    return padded[:, top:top + h, left:left + w].copy()


# ---- CUDA launchers -----------------------------------------------------------------------


INT_LIMIT = 2**31 - 1  # the kernels index within an image (and a row of columns) with ints


def _geometry(shape: tuple[int, ...], window: Window) -> tuple[np.int64, ...]:
    """n, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo: the CUDA kernels' long longs."""
    n, h, w, c = shape
    (kh, kw), (ph, pw), (dh, dw) = window.kernel, window.padding, window.dilation
    extents = (h * w * c, kh * kw * c, window.output[0] * window.output[1],
               h + ph + kh * dh, w + pw + kw * dw)
    if max(extents) > INT_LIMIT:
        raise ValueError(f"im2col / col2im on the GPU: an image of {h}x{w}x{c} values or a "
                         f"row of {kh * kw * c} columns is too large for the kernels' int "
                         f"indices (at most {INT_LIMIT} per image)")
    return tuple(np.int64(v) for v in (*shape, *window.scalars()))


def _im2col_cuda(x, window: Window, pad_value: float):
    xp = get_array_module(x)
    n, c = x.shape[0], x.shape[3]
    (kh, kw), (ho, wo) = window.kernel, window.output
    cols = xp.empty((n * ho * wo, kh * kw * c), x.dtype)
    kernel = cuda.kernel("conv.cu", "im2col", x.dtype)
    kernel((cuda.blocks(cols.size),), (cuda.THREADS,),
           (x, cols, *_geometry(x.shape, window), x.dtype.type(pad_value)))
    return cols


def _col2im_cuda(cols, input_shape: tuple[int, ...], window: Window, out):
    xp = get_array_module(cols)
    image = out if out is not None and out.flags.c_contiguous else xp.empty(input_shape,
                                                                            cols.dtype)
    kernel = cuda.kernel("conv.cu", "col2im", cols.dtype)
    kernel((cuda.blocks(image.size),), (cuda.THREADS,),
           (cols, image, *_geometry(tuple(input_shape), window)))
    if out is not None and image is not out:
        out[...] = image
    return out if out is not None else image


# ---- fast paths (float32 / float64, any layout: made contiguous) ----------------------------


@register("im2col", "cpu")
def _im2col_numba(x, window: Window, pad_value: float):
    x = np.ascontiguousarray(x)
    n, c = x.shape[0], x.shape[3]
    (kh, kw), (ho, wo) = window.kernel, window.output
    cols = np.empty((n * ho * wo, kh * kw * c), x.dtype)
    _im2col_kernel(x, *window.scalars(), pad_value, cols)
    return cols


@register("col2im", "cpu")
def _col2im_numba(cols, input_shape: tuple[int, ...], window: Window, out):
    out = np.empty(input_shape, cols.dtype) if out is None else out
    _col2im_kernel(np.ascontiguousarray(cols), *window.scalars(), out)
    return out


register("im2col", "cuda")(lambda x, window, pad_value: _im2col_cuda(
    get_array_module(x).ascontiguousarray(x), window, pad_value))
register("col2im", "cuda")(lambda cols, input_shape, window, out: _col2im_cuda(
    get_array_module(cols).ascontiguousarray(cols), input_shape, window, out))


def im2col(x: np.ndarray, window: Window, pad_value: float = 0.0) -> np.ndarray:
    """x (N, H, W, C) -> cols (N * ho * wo, kh * kw * C): row (n, y, x) holds what kernel
    taps (i, j) read for output pixel (y, x), `pad_value` outside x."""
    fast = registry.lookup("im2col", x)
    if fast is not None:
        return fast(x, window, pad_value)
    return im2col_reference(x, window, pad_value)


def col2im(cols: np.ndarray, input_shape: tuple[int, ...], window: Window,
           out: np.ndarray | None = None) -> np.ndarray:
    """The adjoint of im2col: cols (N * ho * wo, kh * kw * C) -> (N, H, W, C), written into
    `out` (C-contiguous, cols' dtype, on cols' device) when given."""
    fast = registry.lookup("col2im", cols)
    if fast is not None:
        return fast(cols, input_shape, window, out)
    image = col2im_reference(cols, input_shape, window)
    if out is None:
        return image
    out[...] = image
    return out
