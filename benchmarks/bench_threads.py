"""autograd's own threads against BLAS's threads, on this machine, in one process.

    python benchmarks/bench_threads.py [--threads 2] [--rounds 5]

Three tables of ms (medians; see `alternate` for how the configurations take turns):
- a plain training loop (mnist-tiny, batch 64: model, mse, backward, AdamW), its kernels
  split over autograd's threads (`kernels/threads.py`) or not, beside a BLAS on one thread
  or on `--threads`: autograd's setting is "split, BLAS on 1"; before it, "unsplit, BLAS on
  N";
- Winograd per layer (batch 64), forward and weight gradient: unsplit on an N-thread BLAS
  against split on a one-thread BLAS;
- matrix products of growing size: one call on a 1-thread BLAS, one on an N-thread BLAS,
  and `kernels/matmul.py`'s split (where its MIN_MULTIPLY_ADDS floor should stand).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from threadpoolctl import ThreadpoolController
from timing import cpu_name

import autograd
from autograd import optim
from autograd.kernels import matmul, threads, winograd
from autograd.nn import functional as F
from tinydiff.models import build_model

LAYERS = [(32, 32, 28), (64, 64, 28), (96, 32, 28), (64, 64, 14), (128, 64, 14), (64, 64, 7),
          (128, 64, 7)]


_controller = ThreadpoolController()
_parts = threads.parts


def _one_part(count: int, workers: int | None = None) -> list[range]:
    return [range(count)]


def alternate(configurations: list[tuple[bool, int]], fns: list[Callable[[], object]],
              rounds: int) -> list[float]:
    """Median seconds of fns[i] with configurations[i] = (split, BLAS threads): the kernels
    split over autograd's threads or run as one part. BLAS's thread count is changed only
    between phases, 1 s apart: changing it between calls left OpenBLAS's threads spinning
    into the next call (measured here: a split convolution then ran no faster than one
    thread). Within a phase the calls alternate, `rounds` times after a warm-up."""
    medians = [0.0] * len(fns)
    for blas_threads in sorted({blas for _, blas in configurations}, reverse=True):
        _controller.limit(limits=blas_threads, user_api="blas")
        time.sleep(1.0)
        phase = [i for i, (_, blas) in enumerate(configurations) if blas == blas_threads]
        times: dict[int, list[float]] = {i: [] for i in phase}
        for round_ in range(rounds + 1):
            for i in phase:
                threads.parts = _parts if configurations[i][0] else _one_part
                start = time.perf_counter()
                fns[i]()
                if round_:
                    times[i].append(time.perf_counter() - start)
        for i in phase:
            medians[i] = statistics.median(times[i])
    threads.parts = _parts
    _controller.limit(limits=1, user_api="blas")
    return medians


def loop_table(rng: np.random.Generator, n: int, rounds: int) -> None:
    model = build_model("mnist-tiny")
    optimizer = optim.AdamW(model.parameters(), lr=1e-4)
    x, noise = (autograd.tensor(rng.standard_normal((64, 1, 28, 28)).astype(np.float32))
                for _ in range(2))
    t = rng.integers(0, 1000, 64)

    def step() -> None:
        loss = F.mse_loss(model(x, t), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    configurations = {f"unsplit, BLAS on {n} (before)": (False, n),
                      f"split, BLAS on {n}": (True, n),
                      "split, BLAS on 1 (autograd's)": (True, 1),
                      "unsplit, BLAS on 1": (False, 1)}
    medians = alternate(list(configurations.values()), [step] * 4, rounds)
    print("| plain loop, batch 64 | ms |\n| --- | ---: |")
    for name, median in zip(configurations, medians):
        print(f"| {name} | {median * 1e3:.0f} |")


def layer_table(rng: np.random.Generator, n: int, rounds: int) -> None:
    print(f"\n| Winograd layer, batch 64 | forward: unsplit, BLAS {n} / split, BLAS 1 | "
          f"weight grad: the same |\n| --- | --- | --- |")
    for channels, out_channels, size in LAYERS:
        x = rng.standard_normal((64, size, size, channels), dtype=np.float32)
        grad = rng.standard_normal((64, size, size, out_channels), dtype=np.float32)
        transformed = winograd.kernel_transform(
            rng.standard_normal((out_channels, channels, 3, 3), dtype=np.float32))
        cells = []
        for fn in (partial(winograd.winograd_conv, x, transformed, None),
                   partial(winograd.winograd_weight_grad, x, grad)):
            before, after = alternate([(False, n), (True, 1)], [fn, fn], rounds)
            cells.append(f"{before * 1e3:.1f} / {after * 1e3:.1f}")
        print(f"| {channels}->{out_channels} @{size} | {' | '.join(cells)} |")


def matmul_table(rng: np.random.Generator, n: int, rounds: int) -> None:
    print(f"\n| float32 product (m, k) @ (k, n) | multiply-adds | 1 BLAS thread | {n} BLAS "
          f"threads | split, BLAS 1 |\n| --- | ---: | ---: | ---: | ---: |")
    for m, k, columns in [(64, 128, 128), (256, 128, 128), (512, 256, 128), (512, 512, 256),
                          (1024, 512, 256),
                          (2048, 512, 512), (4096, 1024, 1024)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, columns), dtype=np.float32)
        product = partial(np.matmul, a, b)
        split = partial(matmul.matmul_on_threads, a, b)
        times = alternate([(False, 1), (False, n), (True, 1)], [product, product, split],
                          rounds)
        print(f"| ({m}, {k}) @ ({k}, {columns}) | 2^{np.log2(m * k * columns):.0f} | "
              + " | ".join(f"{t * 1e3:.3f}" for t in times) + " |")
    print(f"(matmul.MIN_MULTIPLY_ADDS = 2^{np.log2(matmul.MIN_MULTIPLY_ADDS):.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating calls (median)")
    args = parser.parse_args()
    autograd.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_name()}; {args.threads} threads; medians of {args.rounds} alternating "
          "calls\n")
    loop_table(rng, args.threads, args.rounds)
    layer_table(rng, args.threads, args.rounds)
    matmul_table(rng, args.threads, args.rounds * 4)


if __name__ == "__main__":
    main()
