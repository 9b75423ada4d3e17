"""Timing helpers shared by the benchmark scripts: medians, and NumPy's matmul rate (the
yardstick every GFLOP/s figure is divided by)."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() over `repeats` calls, after one warm-up call."""
    fn()  # warm-up: compilation, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, called in turn `repeats` times after a warm-up."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def page_faults_per_call(fn: Callable[[], object], repeats: int) -> float:
    """Minor page faults of the process per fn() call over `repeats` calls, after one
    warm-up call: pages touched for the first time, ~0 when a step reuses its buffers."""
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / repeats


def matmul_rate(m: int, k: int, n: int, repeats: int, rng: np.random.Generator,
                device: str = "cpu") -> float:
    """GFLOP/s of a float32 (m, k) @ (k, n) matmul: NumPy's, on as many BLAS threads as
    autograd's kernels use (autograd itself keeps BLAS on one), or CuPy's on device "cuda"
    (timed to the GPU's completion)."""
    from threadpoolctl import threadpool_limits

    from autograd import cuda, get_num_threads
    from autograd.backend import array_module, to_device

    xp = array_module(device)
    a = to_device(rng.standard_normal((m, k), dtype=np.float32), device)
    b = to_device(rng.standard_normal((k, n), dtype=np.float32), device)
    out = xp.empty((m, n), np.float32)
    wait = cuda.synchronize if xp is not np else (lambda: None)
    with threadpool_limits(get_num_threads(), user_api="blas"):
        seconds = median_seconds(lambda: (xp.matmul(a, b, out=out), wait()), repeats)
    return 2.0 * m * k * n / seconds / 1e9


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo, else the platform's), to print beside figures."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()
