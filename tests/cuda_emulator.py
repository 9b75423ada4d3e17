"""Runs the CUDA C kernels of `autograd/kernels/cuda/` on the CPU, so their logic (indexing,
reductions, barriers) and their launchers (argument types, dtypes, grid sizes) are tested on
a machine without a GPU.

`EmulatedRawModule(code=..., options=...)` stands in for `cupy.RawModule`: it compiles the
source with g++ as plain C++ (CUDA's qualifiers defined away) and `get_function(name)`
returns a kernel launched as CuPy's, `kernel(grid, block, args)`. Blocks run one after
another; the threads of a block are coroutines (ucontext) on one OS thread, switched at
each `__syncthreads()`, so `__shared__` memory is a static array and a barrier that some
threads of a block skip (a kernel bug) is reported rather than hanging. Every argument is
checked against the kernel's C signature: arrays of the right dtype (CuPy passes a data
pointer, whatever the strides, and so does this), `long long` as numpy.int64, `int` as
numpy.int32, `REAL` / `double` / `float` as numpy floats of that width.

What it cannot tell: speed, memory coalescing, races between threads (they interleave only
at barriers), warp-level behaviour (a source using shuffles or warp votes fails to compile
here) and device-only math differences. `emulated_cuda()` is the simulated CuPy
(tests/fake_cupy.py) plus this RawModule, with the kernel registry's CUDA fast paths enabled
for the simulated arrays (without it they have none: the ops run their own math).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import fake_cupy
import numpy as np

COMPILER = shutil.which("g++")

_PRELUDE = r"""
#include <cmath>
#include <functional>
#include <ucontext.h>
#include <vector>
struct EmulatedDim { unsigned x = 0, y = 1, z = 1; };
static EmulatedDim threadIdx, blockIdx, blockDim, gridDim;
static ucontext_t emulated_scheduler;
static std::vector<ucontext_t> emulated_threads;
static std::vector<int> emulated_state;  // 0 running, 1 waiting at a barrier, 2 finished
static std::function<void()>* emulated_body;
static void __syncthreads() {
    emulated_state[threadIdx.x] = 1;
    swapcontext(&emulated_threads[threadIdx.x], &emulated_scheduler);
}
static void emulated_entry() {
    (*emulated_body)();
    emulated_state[threadIdx.x] = 2;  // then uc_link: back to the scheduler
}
// Runs body as every thread of every block; -1 when a barrier was not reached by all.
static int emulated_run(unsigned grid, unsigned block, std::function<void()> body) {
    const size_t stack_size = 64 * 1024;
    static std::vector<char> stacks;  // kept from launch to launch: no page faults
    if (stacks.size() < stack_size * block) stacks.resize(stack_size * block);
    gridDim.x = grid;
    blockDim.x = block;
    emulated_body = &body;
    emulated_threads.assign(block, ucontext_t());
    emulated_state.assign(block, 0);
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        for (unsigned t = 0; t < block; ++t) {
            getcontext(&emulated_threads[t]);
            emulated_threads[t].uc_stack.ss_sp = stacks.data() + t * stack_size;
            emulated_threads[t].uc_stack.ss_size = stack_size;
            emulated_threads[t].uc_link = &emulated_scheduler;
            makecontext(&emulated_threads[t], emulated_entry, 0);
            emulated_state[t] = 0;
        }
        for (;;) {  // one round: every thread runs to its next barrier or to its end
            unsigned finished = 0, waiting = 0;
            for (unsigned t = 0; t < block; ++t) {
                if (emulated_state[t] == 2) { ++finished; continue; }
                emulated_state[t] = 0;
                threadIdx.x = t;
                swapcontext(&emulated_scheduler, &emulated_threads[t]);
                if (emulated_state[t] == 2) ++finished; else ++waiting;
            }
            if (waiting == 0) break;
            if (finished > 0) return -1;
        }
    }
    return 0;
}
// CUDA's round-to-nearest intrinsics: one IEEE operation each (g++ -std=c++17 contracts
// nothing into fused multiply-adds).
#define EMULATED_RN(name, type, op) \
    static inline type name(type a, type b) { return a op b; }
EMULATED_RN(__fadd_rn, float, +) EMULATED_RN(__fsub_rn, float, -)
EMULATED_RN(__fmul_rn, float, *) EMULATED_RN(__fdiv_rn, float, /)
EMULATED_RN(__dadd_rn, double, +) EMULATED_RN(__dsub_rn, double, -)
EMULATED_RN(__dmul_rn, double, *) EMULATED_RN(__ddiv_rn, double, /)
static inline float __fsqrt_rn(float v) { return std::sqrt(v); }
static inline double __dsqrt_rn(double v) { return std::sqrt(v); }
static inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }
static inline float rsqrt(float v) { return 1.0f / std::sqrt(v); }
using std::erf; using std::erfc; using std::exp; using std::fabs; using std::isinf;
using std::isnan; using std::log; using std::sqrt; using std::tanh;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
"""

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_CACHE: dict[str, ctypes.CDLL] = {}


def available() -> bool:
    return COMPILER is not None


def _parameters(declaration: str) -> list[str]:
    return [" ".join(p.split()) for p in declaration.split(",") if p.strip()]


def _launchers(code: str) -> str:
    """C++ that launches each kernel of `code`: emulated_launch_NAME(grid, block, ...)."""
    wrappers = []
    for name, declaration in _SIGNATURE.findall(code):
        parameters = _parameters(declaration)
        names = ", ".join(re.findall(r"(\w+)$", p)[0] for p in parameters)
        wrappers.append(
            f'extern "C" int emulated_launch_{name}(unsigned emulated_grid, '
            f'unsigned emulated_block{"".join(", " + p for p in parameters)}) {{\n'
            f'    return emulated_run(emulated_grid, emulated_block, [&] {{ {name}({names}); }});'
            '\n}\n')
    return "\n".join(wrappers)


def _compile(code: str, options: tuple[str, ...]) -> ctypes.CDLL:
    defines = [o for o in options if o.startswith("-D")]
    key = hashlib.sha256((code + "\0".join(defines)).encode()).hexdigest()[:16]
    if key not in _CACHE:
        folder = Path(tempfile.mkdtemp(prefix="cuda_emulator_"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        source, library = folder / "kernels.cpp", folder / "kernels.so"
        source.write_text(_PRELUDE + code + "\n" + _launchers(code))
        result = subprocess.run(
            [COMPILER, "-O1", "-std=c++17", "-shared", "-fPIC", *defines, str(source), "-o",
             str(library)], capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"the CUDA emulator could not compile the source:\n"
                               f"{result.stderr}")
        _CACHE[key] = ctypes.CDLL(str(library))
    return _CACHE[key]


class EmulatedKernel:
    """One kernel, called as a CuPy RawKernel: kernel(grid, block, args)."""

    def __init__(self, library: ctypes.CDLL, name: str, parameters: list[str],
                 real: np.dtype) -> None:
        self.name, self.real, self.parameters = name, real, parameters
        self.launch = getattr(library, f"emulated_launch_{name}")
        self.launch.argtypes = [ctypes.c_uint, ctypes.c_uint,
                                *(self._ctype(p) for p in parameters)]
        self.launch.restype = ctypes.c_int

    @staticmethod
    def _kind(parameter: str) -> str:
        """The C type of a parameter, without const and the name: "REAL*", "long long"."""
        words = parameter.replace("*", " * ").split()[:-1]
        return " ".join(w for w in words if w != "const").replace(" *", "*")

    def _ctype(self, parameter: str):
        kind = self._kind(parameter)
        if kind.endswith("*"):
            return ctypes.c_void_p
        return {"long long": ctypes.c_longlong, "int": ctypes.c_int, "double": ctypes.c_double,
                "float": ctypes.c_float, "unsigned": ctypes.c_uint,
                "REAL": ctypes.c_float if self.real == np.float32 else ctypes.c_double}[kind]

    def _argument(self, parameter: str, value):
        kind = self._kind(parameter)
        where = f"{self.name}: argument {parameter!r}"
        if kind.endswith("*"):
            if not isinstance(value, fake_cupy.ndarray):
                raise TypeError(f"{where} must be a device array, got {type(value).__name__}")
            expected = {"REAL": self.real, "double": np.dtype(np.float64),
                        "float": np.dtype(np.float32), "long long": np.dtype(np.int64),
                        "int": np.dtype(np.int32)}[kind[:-1]]
            if value.dtype != expected:
                raise TypeError(f"{where} must hold {expected}, got {value.dtype}")
            return value._array.ctypes.data
        expected = {"long long": np.int64, "int": np.int32, "double": np.float64,
                    "float": np.float32, "unsigned": np.uint32, "REAL": self.real.type}[kind]
        if type(value) is not expected:
            raise TypeError(f"{where} must be numpy.{expected.__name__}, got "
                            f"{type(value).__name__} {value!r}")
        return value.item()

    def __call__(self, grid, block, args) -> None:
        grid, block = (g[0] if isinstance(g, tuple) else g for g in (grid, block))
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name} takes {len(self.parameters)} arguments, got "
                            f"{len(args)}")
        if not 1 <= block <= 1024 or grid < 1:
            raise ValueError(f"{self.name}: bad launch: grid {grid}, block {block}")
        values = [self._argument(p, a) for p, a in zip(self.parameters, args)]
        if self.launch(grid, block, *values) != 0:
            raise RuntimeError(f"{self.name}: some threads of a block finished while others "
                               "waited at a __syncthreads() (a divergent barrier)")


class EmulatedRawModule:
    """cupy.RawModule(code=..., options=...) compiled for the CPU."""

    def __init__(self, code: str, options: tuple[str, ...] = (), **kwargs) -> None:
        self.code = code
        self.library = _compile(code, tuple(options))
        real = next((o.split("=", 1)[1] for o in options if o.startswith("-DREAL=")), None)
        self.real = np.dtype(np.float32 if real == "float" else np.float64)
        self.signatures = {name: [p for p in params.split(",") if p.strip()]
                           for name, params in _SIGNATURE.findall(code)}

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self.signatures:
            raise AttributeError(f"the module has no kernel {name!r}")
        return EmulatedKernel(self.library, name, self.signatures[name], self.real)


@contextlib.contextmanager
def emulated_cuda():
    """The simulated CuPy with this RawModule: device "cuda" runs the CUDA kernels on the
    CPU. Yields the module."""
    from autograd.kernels import cuda, registry

    cuda._module.cache_clear()  # compiled modules are cached per source and REAL
    fake_cupy.RawModule = EmulatedRawModule
    registry.DEVICE_TYPES[fake_cupy.__name__] = "cuda"  # its arrays take the CUDA fast paths
    try:
        with fake_cupy.simulated_cuda() as module:
            yield module
    finally:
        del registry.DEVICE_TYPES[fake_cupy.__name__]
        del fake_cupy.RawModule
        cuda._module.cache_clear()
