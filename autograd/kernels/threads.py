"""One knob for the CPU threads: numba's parallel kernels and the BLAS behind np.matmul."""

from __future__ import annotations

import numba
from threadpoolctl import ThreadpoolController

_controller = ThreadpoolController()


def set_num_threads(n: int) -> None:
    """Use n threads in numba kernels and in BLAS (OpenBLAS / MKL), process-wide.
    n is at most numba's NUMBA_NUM_THREADS (the number of cores by default)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"set_num_threads: n={n} exceeds NUMBA_NUM_THREADS="
                         f"{numba.config.NUMBA_NUM_THREADS} (set that variable before "
                         "starting Python to allow more)")
    numba.set_num_threads(n)
    _controller.limit(limits=n, user_api="blas")


def get_num_threads() -> int:
    """The number of threads numba kernels use (set_num_threads sets BLAS to the same)."""
    return numba.get_num_threads()


def single_threaded_blas():
    """A context manager: BLAS on one thread inside, as before after (for work that runs
    its own threads, each calling BLAS)."""
    return _controller.limit(limits=1, user_api="blas")
