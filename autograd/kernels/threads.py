"""The CPU threads: numba's parallel kernels, autograd's worker threads, and BLAS.

autograd parallelises its CPU work itself. numba's parallel kernels run on
`get_num_threads()` threads, and the kernels built on matrix products (the convolutions,
large matmuls) cut their batch into one contiguous part per thread and run the parts on
autograd's worker threads (`map_parts`), each part's products on one BLAS thread. So
NumPy's BLAS runs on one thread: `import autograd` and `set_num_threads` set it so. A
multi-threaded OpenBLAS keeps its threads spinning for a while after each product, and on a
small CPU they take the cores the workers need. `benchmarks/bench_threads.py`, a plain
mnist-tiny training loop at batch 64 on 2 cores: 1.18 s a step split on a 1-thread BLAS,
1.69 s split beside a 2-thread BLAS, 1.50 s unsplit on a 2-thread BLAS (as before the
split). (`threadpoolctl` changes BLAS's threads back, for code that needs it.)

A worker runs with one numba thread, so a kernel called on a worker (or anywhere while
`get_num_threads()` is 1) runs its parts in the calling thread: work never nests.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numba
from threadpoolctl import ThreadpoolController

_controller = ThreadpoolController()
_pools: dict[int, ThreadPoolExecutor] = {}
T = TypeVar("T")


def set_num_threads(n: int) -> None:
    """Use n threads for autograd's CPU kernels (numba's and the worker threads that split
    matrix products), process-wide; BLAS itself stays on one thread (see the module's
    docstring). n is at most numba's NUMBA_NUM_THREADS (the number of cores by default)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"set_num_threads: n={n} exceeds NUMBA_NUM_THREADS="
                         f"{numba.config.NUMBA_NUM_THREADS} (set that variable before "
                         "starting Python to allow more)")
    numba.set_num_threads(n)
    single_threaded_blas()


def get_num_threads() -> int:
    """The number of threads autograd's CPU kernels use in the calling thread (1 on a
    worker thread)."""
    return numba.get_num_threads()


def single_threaded_blas():
    """BLAS on one thread; as a context manager, only inside (BLAS's threads as before
    after)."""
    return _controller.limit(limits=1, user_api="blas")


def run_on_workers(run: Callable[[int], T], count: int, workers: int) -> list[T]:
    """[run(i) for i in range(count)], on up to `workers` threads (the calling thread and
    pool threads), each call on one numba thread; every call has ended when this returns,
    also when one raised."""
    workers = min(workers, count)

    def single_threaded(index: int) -> T:
        previous = numba.get_num_threads()
        numba.set_num_threads(1)  # numba's setting is per thread
        try:
            return run(index)
        finally:
            numba.set_num_threads(previous)

    if workers <= 1:
        return [single_threaded(i) for i in range(count)]
    if workers - 1 not in _pools:
        _pools[workers - 1] = ThreadPoolExecutor(workers - 1,
                                                 thread_name_prefix="autograd-worker")
    futures = [_pools[workers - 1].submit(single_threaded, i) for i in range(1, count)]
    try:
        first = single_threaded(0)
    finally:
        rest = [future.result() for future in futures]
    return [first, *rest]


def parts(count: int, workers: int | None = None) -> list[range]:
    """range(count) cut into `workers` (default: get_num_threads()) contiguous parts of
    near-equal size, none empty."""
    workers = max(1, min(count, workers or get_num_threads()))
    bounds = [count * i // workers for i in range(workers + 1)]
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def map_parts(run: Callable[[range], T], count: int, workers: int | None = None) -> list[T]:
    """[run(part) for part in parts(count)], the parts on autograd's threads, in order."""
    pieces = parts(count, workers)
    return run_on_workers(lambda i: run(pieces[i]), len(pieces), len(pieces))


def ordered_sum(arrays: list) -> Any:
    """arrays[0] + arrays[1] + ..., in that order (a new array)."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total


single_threaded_blas()  # autograd's kernels run their own threads (see above)
