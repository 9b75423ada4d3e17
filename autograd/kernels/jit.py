"""How autograd compiles its CPU kernels: `@cpu_kernel` is `numba.njit` with the options every
kernel shares.

- `nogil=True`: a kernel releases the GIL, so worker threads run kernels side by side;
- `cache=True`: compiled once per machine, kept beside the source (`__pycache__`);
- `error_model="numpy"`: a division by zero gives inf or nan, as in NumPy (the ops' math),
  instead of raising ZeroDivisionError. numba's default checks every divisor, a branch that
  keeps LLVM from vectorising any loop with a division in it: the float32 sigmoid of the
  fused GroupNorm + SiLU ran 3.3x faster with NumPy's model (benchmarks/README.md).

Kernels add their own options: `@cpu_kernel(parallel=True)`, `@cpu_kernel(fastmath=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba

KERNEL_OPTIONS = dict(nogil=True, cache=True, error_model="numpy")


def cpu_kernel(function: Callable | None = None, **options: Any) -> Any:
    """`@cpu_kernel` or `@cpu_kernel(**options)`: numba.njit with KERNEL_OPTIONS and `options`."""
    compile_with = numba.njit(**KERNEL_OPTIONS, **options)
    return compile_with if function is None else compile_with(function)
