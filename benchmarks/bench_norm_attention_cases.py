"""Benchmark cases for the norm and attention layers at the mnist-tiny UNet's shapes
(batch 64, float32): GroupNorm(8) at 28/14/7 px, the attention block at 7x7 with 64
channels, and softmax over (64, 49, 49).

`CASES` is a list of (name, flops_per_call, setup); `setup(rng)` returns a forward closure
that produces the output tensor and the leaf tensors that require grad. flops_per_call
counts a forward pass: matrix products as 2 m n k, norms and softmax as a few flops per
element (stated below), so GFLOP/s compares within a case, not across cases.

Run standalone to time forward and forward+backward, fused kernels against the NumPy
references (AUTOGRAD_REFERENCE_KERNELS=1):

    python benchmarks/bench_norm_attention_cases.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
from timing import median_seconds

import autograd
from autograd import nn
from autograd.nn import functional as F
from autograd.tensor import Tensor

BATCH = 64
GROUP_NORM_FLOPS_PER_ELEMENT = 8.0  # mean, centred square, normalise and affine
SOFTMAX_FLOPS_PER_ELEMENT = 5.0  # max, subtract, exp, sum, scale

Setup = Callable[[np.random.Generator], tuple[Callable[[], Tensor], list[Tensor]]]


def _leaf(rng: np.random.Generator, *shape: int) -> Tensor:
    return Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)


def group_norm_case(channels: int, size: int) -> tuple[str, float, Setup]:
    def setup(rng):
        x = _leaf(rng, BATCH, channels, size, size)
        weight, bias = _leaf(rng, channels), _leaf(rng, channels)
        return (lambda: F.group_norm(x, 8, weight, bias)), [x, weight, bias]

    elements = BATCH * channels * size * size
    return (f"group_norm_{BATCH}x{channels}x{size}x{size}_g8",
            GROUP_NORM_FLOPS_PER_ELEMENT * elements, setup)


def attention_block_case(channels: int = 64, size: int = 7) -> tuple[str, float, Setup]:
    def setup(rng):
        block = nn.SelfAttention2d(channels, generator=rng)
        x = _leaf(rng, BATCH, channels, size, size)
        return (lambda: block(x)), [x, *block.parameters()]

    tokens = size * size
    projections = 2 * BATCH * tokens * channels * (3 * channels + channels)
    attention = 2 * 2 * BATCH * tokens * tokens * channels
    return f"self_attention2d_{BATCH}x{channels}x{size}x{size}", projections + attention, setup


def softmax_case(rows: int = 49, length: int = 49) -> tuple[str, float, Setup]:
    def setup(rng):
        x = _leaf(rng, BATCH, rows, length)
        return (lambda: F.softmax(x, -1)), [x]

    return (f"softmax_{BATCH}x{rows}x{length}",
            SOFTMAX_FLOPS_PER_ELEMENT * BATCH * rows * length, setup)


CASES: list[tuple[str, float, Setup]] = [
    group_norm_case(32, 28),
    group_norm_case(64, 14),
    group_norm_case(64, 7),
    attention_block_case(64, 7),
    softmax_case(49, 49),
]


# ---- standalone timing --------------------------------------------------------------------


def time_case(setup: Setup, repeats: int) -> tuple[float, float]:
    """Median seconds of a forward pass and of forward + backward."""
    forward, leaves = setup(np.random.default_rng(0))
    upstream = np.ones(forward().shape, np.float32)

    def forward_only():
        with autograd.no_grad():
            forward()

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        forward().backward(upstream)

    return median_seconds(forward_only, repeats), median_seconds(forward_backward, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"{'case':34s} {'fwd ms':>8s} {'ref fwd':>8s} {'x':>5s}   "
          f"{'f+b ms':>8s} {'ref f+b':>8s} {'x':>5s}  {'fwd GFLOP/s':>11s}")
    for name, flops, setup in CASES:
        os.environ["AUTOGRAD_REFERENCE_KERNELS"] = "0"
        fused = time_case(setup, args.repeats)
        os.environ["AUTOGRAD_REFERENCE_KERNELS"] = "1"
        reference = time_case(setup, args.repeats)
        os.environ["AUTOGRAD_REFERENCE_KERNELS"] = "0"
        print(f"{name:34s} {fused[0] * 1e3:8.2f} {reference[0] * 1e3:8.2f} "
              f"{reference[0] / fused[0]:5.1f}   {fused[1] * 1e3:8.2f} "
              f"{reference[1] * 1e3:8.2f} {reference[1] / fused[1]:5.1f}  "
              f"{flops / fused[0] / 1e9:11.2f}")


if __name__ == "__main__":
    main()
