"""CUDA kernels for the GPU backend: CUDA C sources (the `.cu` files beside this one),
compiled by CuPy (NVRTC) on first use, once per float dtype, and cached by CuPy on disk.

Each source is written for one element type, `REAL` (a macro: float or double, given at
compile time), with `extern "C"` kernels, so `nvcc --ptx -DREAL=float file.cu` compiles it
as it is (tests/test_cuda_sources.py does that where nvcc exists). The Python launchers live
beside the numba kernels and the references of the same computation (`kernels/norm.py`...).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from autograd.backend import cuda_module

SOURCE_DIR = Path(__file__).resolve().parent
REAL_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
THREADS = 256  # threads per block of the element-wise and row kernels


def sources() -> list[Path]:
    """Every kernel source file of the package."""
    return sorted(SOURCE_DIR.glob("*.cu"))


def real_type(dtype) -> str:
    """The C type of REAL for a float32 / float64 array; TypeError otherwise."""
    try:
        return REAL_TYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"the CUDA kernels take float32 or float64 arrays, got {dtype}") from None


@cache
def _module(source: str, real: str):
    cupy = cuda_module()
    code = (SOURCE_DIR / source).read_text()
    return cupy.RawModule(code=code, options=("-std=c++14", f"-DREAL={real}"))


def kernel(source: str, name: str, dtype):
    """The compiled kernel `name` of `source` (a file name in this folder) for `dtype`."""
    return _module(source, real_type(dtype)).get_function(name)


def blocks(count: int, threads: int = THREADS) -> int:
    """Blocks of `threads` that cover `count` elements (at least one)."""
    return max(1, (count + threads - 1) // threads)


def _memory_order(a) -> tuple[int, ...] | None:
    """The axes order in which `a`'s memory is C-contiguous (a permutation of a dense
    array, as channels-last images), or None."""
    order = tuple(sorted(range(a.ndim), key=lambda d: -a.strides[d]))
    return order if a.transpose(order).flags.c_contiguous else None


def launch_elementwise(source: str, name: str, *inputs):
    """out[i] = f(inputs[0][i], inputs[1][i], ...) by the kernel `name` of `source`, whose
    signature is (const REAL* input..., REAL* out, long long n), for float inputs of one
    dtype (broadcast to one shape). The output keeps the inputs' memory layout when they
    share a dense one (channels-last stays channels-last), else inputs are made contiguous."""
    dtype = inputs[0].dtype
    if any(a.dtype != dtype for a in inputs):
        raise TypeError(f"{name}: inputs of one dtype needed, got "
                        f"{', '.join(str(a.dtype) for a in inputs)}")
    xp = cuda_module()
    shape = np.broadcast_shapes(*(a.shape for a in inputs))
    inputs = [a if a.shape == shape else xp.broadcast_to(a, shape) for a in inputs]
    order = _memory_order(inputs[0])
    if order is None or any(_memory_order(a) != order for a in inputs[1:]):
        inputs, order = [xp.ascontiguousarray(a) for a in inputs], tuple(range(len(shape)))
    dense = [a.transpose(order) for a in inputs]
    out = xp.empty(dense[0].shape, dtype=dtype)
    if out.size:
        kernel(source, name, dtype)((blocks(out.size),), (THREADS,),
                                    (*dense, out, np.int64(out.size)))
    return out.transpose(tuple(int(d) for d in np.argsort(order)))
