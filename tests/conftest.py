"""Shared test configuration: hypothesis profiles, paths to the shared reference data, the
device legs and the shared data fixtures."""

import contextlib
import os
from pathlib import Path

from hypothesis import HealthCheck, settings

# "ci": derandomized and small, so the suite is reproducible and fits CI's budget.
# "thorough": many more random cases, for local runs (HYPOTHESIS_PROFILE=thorough pytest).
settings.register_profile(
    "ci",
    max_examples=30,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- devices ------------------------------------------------------------------------------
# Tests that take the `device` fixture run once per device: "cpu"; "cuda" on a real GPU
# (skipped without one); and "cuda-sim", device "cuda" on the simulated CuPy of
# tests/fake_cupy.py, which runs every CUDA code path but the kernels on NumPy, strictly.
# `gpu_device` gives the two device legs alone, and `kernel_leg` the legs of the CUDA kernel
# tests: "cuda" and "cuda-emulated" (the CUDA C sources run on the CPU by
# tests/cuda_emulator.py); the simulated CuPy has no fast paths, so no kernel leg.

import cuda_emulator  # noqa: E402
import pytest  # noqa: E402
from fake_cupy import simulated_cuda  # noqa: E402

import autograd  # noqa: E402

DEVICE_LEGS = ["cpu", "cuda", "cuda-sim"]


def _enter(leg: str):
    """The context in which device "cuda" is that of `leg` (skips the test if it cannot)."""
    if leg == "cuda" and not autograd.cuda.is_available():
        try:
            autograd.backend.cuda_module()
        except RuntimeError as error:  # e.g. "CuPy is not installed (...)"
            reason = str(error).removeprefix("device 'cuda' is not available: ")
            pytest.skip("needs a CUDA GPU: " + reason.split(" (")[0])
    if leg == "cuda-sim":
        return simulated_cuda()
    if leg == "cuda-emulated":
        if not cuda_emulator.available():
            pytest.skip("the CUDA emulator needs g++")
        return cuda_emulator.emulated_cuda()
    return contextlib.nullcontext()


@pytest.fixture(params=DEVICE_LEGS)
def device(request):
    """"cpu", then "cuda" (a real GPU), then "cuda" on the simulated CuPy."""
    with _enter(request.param):
        yield "cpu" if request.param == "cpu" else "cuda"


@pytest.fixture(params=DEVICE_LEGS[1:])
def gpu_device(request):
    """"cuda" on a real GPU (skipped without one), then on the simulated CuPy."""
    with _enter(request.param):
        yield "cuda"


@pytest.fixture
def emulated():
    """Device "cuda" with the CUDA sources emulated on the CPU (skipped without g++): the
    op-level emulated legs, where the kernels themselves are `kernel_leg`'s."""
    with _enter("cuda-emulated"):
        yield "cuda"


@pytest.fixture(params=["cuda", "cuda-emulated"])
def kernel_leg(request):
    """The leg's name, with device "cuda" set up for it: a real GPU (skipped without one),
    or the CUDA sources emulated on the CPU."""
    with _enter(request.param):
        yield request.param


# ---- data ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def digits():
    """The first 64 MNIST training digits and their labels (the trainer tests' data)."""
    from tinydiff.data import load_mnist

    images, labels = load_mnist("train")
    return images[:64], labels[:64]
