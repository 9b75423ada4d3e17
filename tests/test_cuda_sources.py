"""Every CUDA kernel source compiles, for float and for double, with nvcc --ptx (where nvcc
exists: CuPy compiles the same sources with NVRTC at run time, which needs a GPU driver).
A syntax or type error in a kernel cannot wait for someone with a GPU to find it."""

import shutil
import subprocess

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
