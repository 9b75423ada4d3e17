"""The matrix product on autograd's threads: the fast path of `MatMul` on the CPU.

BLAS runs on one thread (`kernels/threads.py`), so a large product is cut into one block of
output rows per thread (of output columns, when there are fewer rows than threads), each
block one BLAS call on autograd's threads. Each output element is one dot product over the
whole inner dimension, as in a single call (its rounding may differ with the block's
size): no partial sums are added afterwards.
"""

from __future__ import annotations

import math

import numpy as np

from autograd.kernels.registry import floating, register
from autograd.kernels.threads import get_num_threads, map_parts

# Below this many multiply-adds one thread is quicker than handing a block to a worker:
# `benchmarks/bench_threads.py` on 2 cores, float32, one BLAS thread against split: 2^24
# 0.39 / 0.54 ms, 2^26 1.81 / 1.97 ms, 2^27 3.54 / 2.87 ms.
MIN_MULTIPLY_ADDS = 1 << 27


def _large(a: np.ndarray, b: np.ndarray) -> bool:
    """Float operands of one dtype, at least 2-D, whose product is worth splitting."""
    if not floating(a, b) or a.ndim < 2 or b.ndim < 2 or get_num_threads() == 1:
        return False
    batch = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return batch * a.shape[-2] * a.shape[-1] * b.shape[-1] >= MIN_MULTIPLY_ADDS


@register("matmul", "cpu", supports=_large)
def matmul_on_threads(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (..., M, K) @ b (..., K, N) -> (..., M, N), with NumPy's batch broadcasting."""
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    out = np.empty(shape, np.result_type(a, b))
    rows, columns = a.shape[-2], b.shape[-1]
    if rows >= get_num_threads() or rows >= columns:
        def block(part: range) -> None:
            np.matmul(a[..., part.start:part.stop, :], b, out=out[..., part.start:part.stop, :])
        map_parts(block, rows)
    else:
        def block(part: range) -> None:
            np.matmul(a, b[..., part.start:part.stop], out=out[..., part.start:part.stop])
        map_parts(block, columns)
    return out
