"""Every CUDA kernel source compiles, for float and for double, with nvcc --ptx (where nvcc
exists: CuPy compiles the same sources with NVRTC at run time, which needs a GPU driver).
A syntax or type error in a kernel cannot wait for someone with a GPU to find it. And the
CUDA emulator itself (tests/cuda_emulator.py): barriers, launch checks."""

import shutil
import subprocess

import cuda_emulator
import fake_cupy
import numpy as np
import pytest

from autograd.kernels import cuda

NVCC = shutil.which("nvcc")


def test_the_package_has_kernel_sources():
    names = {path.name for path in cuda.sources()}
    assert {"activation.cu", "adam.cu", "conv.cu", "norm.cu", "softmax.cu",
            "special.cu"} <= names


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("real", ["float", "double"])
@pytest.mark.parametrize("source", cuda.sources(), ids=lambda path: path.name)
def test_kernel_source_compiles_with_nvcc(source, real, tmp_path):
    ptx = tmp_path / f"{source.stem}.ptx"
    result = subprocess.run(
        [NVCC, "--ptx", "-arch=sm_80", "-std=c++14", f"-DREAL={real}",
         "-Werror=all-warnings", str(source), "-o", str(ptx)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{source.name} with REAL={real}:\n{result.stderr}"
    entries = ptx.read_text().count(".entry")
    assert entries == source.read_text().count('extern "C" __global__'), \
        f"{source.name}: {entries} kernels in the PTX"


# ---- the emulator itself ------------------------------------------------------------------

EMULATOR_PROBE = """
extern "C" __global__ void block_sum(const REAL* x, REAL* out, long long n) {
    __shared__ REAL partial[64];
    partial[threadIdx.x] = threadIdx.x < n ? x[blockIdx.x * n + threadIdx.x] : REAL(0);
    __syncthreads();
    if (threadIdx.x == 0) {
        REAL total = 0;
        for (unsigned t = 0; t < blockDim.x; ++t) total += partial[t];
        out[blockIdx.x] = total;
    }
}
extern "C" __global__ void divergent(REAL* out) {
    if (threadIdx.x == 3) return;
    __syncthreads();
    out[threadIdx.x] = REAL(1);
}
"""


@pytest.mark.skipif(not cuda_emulator.available(), reason="the CUDA emulator needs g++")
def test_the_emulator_runs_barriers_and_checks_launches():
    module = cuda_emulator.EmulatedRawModule(code=EMULATOR_PROBE, options=("-DREAL=double",))
    with fake_cupy.simulated_cuda() as cp:
        x = cp.asarray(np.arange(12.0).reshape(3, 4))
        out = cp.zeros(3)
        module.get_function("block_sum")((3,), (64,), (x, out, np.int64(4)))
        np.testing.assert_array_equal(out.get(), [6.0, 22.0, 38.0])
        with pytest.raises(TypeError, match="must be numpy.int64, got int"):
            module.get_function("block_sum")((3,), (64,), (x, out, 4))
        with pytest.raises(TypeError, match="must hold float64, got float32"):
            module.get_function("block_sum")((3,), (64,), (x.astype(np.float32), out,
                                                           np.int64(4)))
        with pytest.raises(RuntimeError, match="divergent barrier"):
            module.get_function("divergent")((1,), (8,), (cp.zeros(8),))
