"""Per-op overhead of the engine: forward + backward of small elementwise ops, in
microseconds, beside the raw NumPy calls they wrap.

    python benchmarks/bench_engine.py [--size 16] [--repeats 2000]

The ratio shows what the graph bookkeeping costs per op; at a UNet's array sizes the
arithmetic dwarfs it.
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import median_seconds

import autograd


def cases(a: np.ndarray, b: np.ndarray):
    """(name, engine forward+backward, NumPy forward+backward doing the same arithmetic)."""
    ones = np.ones_like(a)

    def engine(op):
        def run():
            x = autograd.Tensor(a, requires_grad=True)
            y = autograd.Tensor(b, requires_grad=True)
            out = op(x, y)
            out.backward(ones if out.ndim else None)
        return run

    def sigmoid_numpy():
        s = 1 / (1 + np.exp(-a))
        return ones * s * (1 - s)

    return [
        ("add", engine(lambda x, y: x + y), lambda: (a + b, ones, ones)),
        ("mul", engine(lambda x, y: x * y), lambda: (a * b, ones * b, ones * a)),
        ("div", engine(lambda x, y: x / y), lambda: (a / b, ones / b, -ones * a / b**2)),
        ("exp", engine(lambda x, y: x.exp()), lambda: ones * np.exp(a)),
        ("tanh", engine(lambda x, y: x.tanh()), lambda: ones * (1 - np.tanh(a) ** 2)),
        ("sigmoid", engine(lambda x, y: x.sigmoid()), sigmoid_numpy),
        ("mul+sum", engine(lambda x, y: (x * y).sum()),
         lambda: (np.sum(a * b), np.broadcast_to(1.0, a.shape) * b, ones * a)),
        ("matmul", engine(lambda x, y: x @ y), lambda: (a @ b, ones @ b.T, a.T @ ones)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="elements per side (size x size)")
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((args.size, args.size)).astype(np.float32)
    b = rng.uniform(0.5, 2.0, (args.size, args.size)).astype(np.float32)
    print(f"forward+backward of one op on ({args.size}, {args.size}) float32, median of "
          f"{args.repeats}")
    print(f"{'op':<10}{'engine us':>12}{'numpy us':>12}{'ratio':>8}")
    for name, engine_fn, numpy_fn in cases(a, b):
        engine_us = median_seconds(engine_fn, args.repeats) * 1e6
        numpy_us = median_seconds(numpy_fn, args.repeats) * 1e6
        print(f"{name:<10}{engine_us:>12.1f}{numpy_us:>12.1f}{engine_us / numpy_us:>8.1f}")


if __name__ == "__main__":
    main()
