"""Winograd F(2x2, 3x3): the fast path of 3x3, stride-1, padding-1 convolutions on the CPU
(forward, input gradient and weight gradient), where almost all of a UNet's flops are.

Each 2x2 block of output pixels (a tile) reads a 4x4 patch d of the zero-padded input.
Lavin & Gray (2015): with the transforms below, the tile's output is

    Y = A^T [ (G g G^T) * (B^T d B) ] A      (* elementwise over the 4x4 positions)

for each pair of channels, summed over input channels. Summing over channels makes each of
the 16 positions one matrix product, `V[k] (tiles, C) @ U[k] (C, O)`: 16 products with
16 * C * O multiplications per tile where im2col's one product has 36 * C * O, 2.25x fewer.
The numba kernels do the two transforms, channels-last (one C-vector per pixel); BLAS the
products. The float32 error is that of the direct sum's order (measured: max |error| 2e-6
against float64 at mnist-tiny's layers, as im2col's 3e-6); `tests/test_conv.py` pins it.

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

The input gradient of a stride-1 padding-1 3x3 convolution is the same convolution of the
output gradient with the kernel flipped (in and out channels swapped, rotated by 180
degrees), so it runs here too. The weight gradient is the adjoint of the forward in U: with
Z = A dY A^T (the tile's 2x2 output gradient spread over the 16 positions),

    dU[k] = sum over tiles of V[k]^T (C, tiles) @ Z[k] (tiles, O),   dW = G^T dU G

again 16 products with 2.25x fewer multiplications than im2col's `cols^T @ dout`.
"""

from __future__ import annotations

import numpy as np

from autograd.kernels.conv import Window, channels_first, channels_last, flipped_weight
from autograd.kernels.jit import cpu_kernel
from autograd.kernels.registry import floating, register
from autograd.kernels.threads import map_parts, ordered_sum

KERNEL_TRANSFORM = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])  # G
# (G W G^T)[a, b] = sum_ij G[a, i] G[b, j] W[i, j]: a (16, 9) matrix on the flattened kernel
KERNEL_TRANSFORM_FLAT = np.kron(KERNEL_TRANSFORM, KERNEL_TRANSFORM)
CHUNK_BYTES = 4 << 20  # transformed input per chunk of images (as conv_gemm's columns)


# Where Winograd beats im2col here (benchmarks/bench_winograd.py, batch 64): with fewer input
# channels the 16 products are too thin for BLAS (1 -> 32 at 28 px: 20 ms against 4.7).
MIN_CHANNELS = 16


def takes(window: Window, groups: int) -> bool:
    """The windows this computes: 3x3, stride 1, padding 1, no dilation, one group (the
    output then has the input's size)."""
    return (window.kernel == (3, 3) and window.stride == (1, 1) and window.padding == (1, 1)
            and window.dilation == (1, 1) and groups == 1)


def _supports(first, second, window: Window, groups: int) -> bool:
    """Forward (x, W), input gradient (dout, W) and weight gradient (x, dout): the
    convolution computed reads `first`, whose channels must be at least MIN_CHANNELS."""
    return (floating(first, second) and takes(window, groups)
            and first.shape[1] >= MIN_CHANNELS)


def kernel_transform(weight: np.ndarray) -> np.ndarray:
    """(O, C, 3, 3) -> U (16, C, O): U[4a + b, c, o] = (G W[o, c] G^T)[a, b], in float64."""
    taps = weight.transpose(2, 3, 1, 0).reshape(9, -1).astype(np.float64)  # (9, C * O)
    transformed = KERNEL_TRANSFORM_FLAT @ taps
    return transformed.astype(weight.dtype).reshape(16, *weight.shape[1::-1])


@cpu_kernel
def _input_transform(x, first_image, images, patch, rows, v):
    """v[4a + b, tile] = (B^T d B)[a, b] for each tile of images first_image.. (x: N, H, W,
    C), d the tile's 4x4 patch with zeros outside x; patch and rows are (4, 4, C) scratch."""
    _, height, width, channels = x.shape
    tiles_y, tiles_x = (height + 1) // 2, (width + 1) // 2
    for b in range(images):
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                tile = (b * tiles_y + ty) * tiles_x + tx
                for i in range(4):
                    iy = 2 * ty - 1 + i
                    for j in range(4):
                        ix = 2 * tx - 1 + j
                        dst = patch[i, j]
                        if 0 <= iy < height and 0 <= ix < width:
                            src = x[first_image + b, iy, ix]
                            for k in range(channels):
                                dst[k] = src[k]
                        else:
                            for k in range(channels):
                                dst[k] = 0
                for j in range(4):  # rows = B^T d
                    for k in range(channels):
                        d1, d2 = patch[1, j, k], patch[2, j, k]
                        rows[0, j, k] = patch[0, j, k] - d2
                        rows[1, j, k] = d1 + d2
                        rows[2, j, k] = d2 - d1
                        rows[3, j, k] = d1 - patch[3, j, k]
                for i in range(4):  # v = rows B
                    v0, v1 = v[4 * i, tile], v[4 * i + 1, tile]
                    v2, v3 = v[4 * i + 2, tile], v[4 * i + 3, tile]
                    for k in range(channels):
                        r1, r2 = rows[i, 1, k], rows[i, 2, k]
                        v0[k] = rows[i, 0, k] - r2
                        v1[k] = r1 + r2
                        v2[k] = r2 - r1
                        v3[k] = r1 - rows[i, 3, k]


@cpu_kernel
def _output_transform(m, bias, first_image, images, rows, out):
    """out[first_image + b] = A^T m A + bias for each tile (m: 16, tiles, O; out: N, H, W,
    O); rows is (2, 4, O) scratch. Pixels of an edge tile beyond the image are dropped."""
    _, height, width, channels = out.shape
    tiles_y, tiles_x = (height + 1) // 2, (width + 1) // 2
    for b in range(images):
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                tile = (b * tiles_y + ty) * tiles_x + tx
                for j in range(4):  # rows = A^T m
                    m0, m1, m2, m3 = m[j, tile], m[4 + j, tile], m[8 + j, tile], m[12 + j, tile]
                    for k in range(channels):
                        rows[0, j, k] = m0[k] + m1[k] + m2[k]
                        rows[1, j, k] = m1[k] - m2[k] - m3[k]
                for i in range(2):  # out = rows A
                    y = 2 * ty + i
                    if y >= height:
                        continue
                    dst = out[first_image + b, y, 2 * tx]
                    for k in range(channels):
                        dst[k] = rows[i, 0, k] + rows[i, 1, k] + rows[i, 2, k] + bias[k]
                    if 2 * tx + 1 < width:
                        dst = out[first_image + b, y, 2 * tx + 1]
                        for k in range(channels):
                            dst[k] = rows[i, 1, k] - rows[i, 2, k] - rows[i, 3, k] + bias[k]


@cpu_kernel
def _grad_output_transform(grad, first_image, images, block, rows, z):
    """z[4a + b, tile] = (A dY A^T)[a, b] for each tile of images first_image.. (grad: N, H,
    W, O), dY the tile's 2x2 output gradient with zeros beyond the image; block (2, 2, O)
    and rows (4, 2, O) are scratch."""
    _, height, width, channels = grad.shape
    tiles_y, tiles_x = (height + 1) // 2, (width + 1) // 2
    for b in range(images):
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                tile = (b * tiles_y + ty) * tiles_x + tx
                for i in range(2):
                    for j in range(2):
                        y, x = 2 * ty + i, 2 * tx + j
                        dst = block[i, j]
                        if y < height and x < width:
                            src = grad[first_image + b, y, x]
                            for k in range(channels):
                                dst[k] = src[k]
                        else:
                            for k in range(channels):
                                dst[k] = 0
                for j in range(2):  # rows = A dY: p, p + q, p - q, -q (p, q: dY's rows)
                    for k in range(channels):
                        p, q = block[0, j, k], block[1, j, k]
                        rows[0, j, k] = p
                        rows[1, j, k] = p + q
                        rows[2, j, k] = p - q
                        rows[3, j, k] = -q
                for i in range(4):  # z = rows A^T, the same along each row
                    z0, z1, z2, z3 = z[4 * i, tile], z[4 * i + 1, tile], z[4 * i + 2, tile], z[
                        4 * i + 3, tile]
                    for k in range(channels):
                        p, q = rows[i, 0, k], rows[i, 1, k]
                        z0[k] = p
                        z1[k] = p + q
                        z2[k] = p - q
                        z3[k] = -q


def winograd_conv(x: np.ndarray, transformed: np.ndarray, bias: np.ndarray | None
                  ) -> np.ndarray:
    """x (N, H, W, C) channels-last, U (16, C, O) -> (N, H, W, O): the 3x3 convolution with
    padding 1, the batch in one part per thread (`threads.map_parts`)."""
    out = np.empty((*x.shape[:3], transformed.shape[2]), x.dtype)
    bias = (np.zeros(transformed.shape[2], x.dtype) if bias is None
            else bias.astype(x.dtype, copy=False))
    map_parts(lambda images: _conv_images(x, transformed, bias, images, out), x.shape[0])
    return out


def _conv_images(x: np.ndarray, transformed: np.ndarray, bias: np.ndarray, images: range,
                 out: np.ndarray) -> None:
    """out[images] = the convolution of x[images], a few images at a time (their transformed
    input reused while it stays in cache)."""
    height, width, channels = x.shape[1:]
    out_channels = transformed.shape[2]
    tiles = ((height + 1) // 2) * ((width + 1) // 2)
    step = max(1, CHUNK_BYTES // (16 * tiles * channels * x.itemsize))
    v = np.empty((16, min(step, len(images)) * tiles, channels), x.dtype)
    m = np.empty((16, v.shape[1], out_channels), x.dtype)
    patch, input_rows = np.empty((2, 4, 4, channels), x.dtype)
    output_rows = np.empty((2, 4, out_channels), x.dtype)
    for first in range(images.start, images.stop, step):
        count = min(step, images.stop - first)
        _input_transform(x, first, count, patch, input_rows, v)
        np.matmul(v[:, :count * tiles], transformed, out=m[:, :count * tiles])
        _output_transform(m, bias, first, count, output_rows, out)


def winograd_weight_grad(x: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """x (N, H, W, C), dout (N, H, W, O), both channels-last -> dU (16, C, O) in float64
    (`weight_from_transformed` makes it dW): each thread's part of the batch summed on its
    own, then the parts' sums in order."""
    totals = map_parts(lambda images: _weight_grad_images(x, grad, images), x.shape[0])
    return ordered_sum(totals)


def _weight_grad_images(x: np.ndarray, grad: np.ndarray, images: range) -> np.ndarray:
    """dU of x[images] and grad[images], summed over them a few images at a time."""
    height, width, channels = x.shape[1:]
    out_channels = grad.shape[3]
    tiles = ((height + 1) // 2) * ((width + 1) // 2)
    step = max(1, CHUNK_BYTES // (16 * tiles * max(channels, out_channels) * x.itemsize))
    v = np.empty((16, min(step, len(images)) * tiles, channels), x.dtype)
    z = np.empty((16, v.shape[1], out_channels), x.dtype)
    patch, rows = np.empty((2, 4, 4, channels), x.dtype)
    block, grad_rows = np.empty((2, 2, out_channels), x.dtype), np.empty((4, 2, out_channels),
                                                                        x.dtype)
    product = np.empty((16, channels, out_channels), x.dtype)
    total = np.zeros((16, channels, out_channels))
    for first in range(images.start, images.stop, step):
        count = min(step, images.stop - first)
        _input_transform(x, first, count, patch, rows, v)
        _grad_output_transform(grad, first, count, block, grad_rows, z)
        np.matmul(v[:, :count * tiles].transpose(0, 2, 1), z[:, :count * tiles], out=product)
        total += product
    return total


def weight_from_transformed(transformed: np.ndarray, dtype) -> np.ndarray:
    """dU (16, C, O) -> dW (O, C, 3, 3) = G^T dU G per channel pair: the adjoint of
    `kernel_transform`."""
    taps = KERNEL_TRANSFORM_FLAT.T @ transformed.reshape(16, -1)  # (9, C * O)
    return np.ascontiguousarray(taps.reshape(3, 3, *transformed.shape[1:]).transpose(3, 2, 0, 1),
                                dtype)


# ---- fast paths of ops/conv.py's three functions on the CPU ------------------------------------


@register("conv2d", "cpu", supports=_supports)
def conv2d_winograd(x, weight, bias, window: Window, groups: int):
    """conv2d_math's fast path for `takes` windows: (N, C, H, W) -> (N, O, H, W), a view of
    channels-last."""
    return channels_first(winograd_conv(channels_last(x), kernel_transform(weight), bias))


@register("conv2d_input_grad", "cpu", supports=_supports)
def conv2d_input_grad_winograd(grad, weight, input_shape: tuple[int, ...], window: Window,
                               groups: int):
    """conv2d_input_grad_math's fast path for `takes` windows: dout (N, O, H, W) -> dx
    (N, C, H, W) = conv(dout, W flipped), padding 1, a view of channels-last."""
    flipped = kernel_transform(flipped_weight(weight, groups))
    return channels_first(winograd_conv(channels_last(grad), flipped, None))


@register("conv2d_weight_grad", "cpu", supports=_supports)
def conv2d_weight_grad_winograd(x, grad, window: Window, groups: int):
    """conv2d_weight_grad_math's fast path for `takes` windows: x (N, C, H, W), dout (N, O,
    H, W) -> dW (O, C, 3, 3), from `winograd_weight_grad`'s float64 sum."""
    return weight_from_transformed(winograd_weight_grad(channels_last(x), channels_last(grad)),
                                   x.dtype)
