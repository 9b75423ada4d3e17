"""The kernel registry: which fast path an op gets, per device type, and the switches that
turn them off (AUTOGRAD_REFERENCE_KERNELS=1; the simulated CuPy has none, the CUDA emulator
enables the CUDA ones). The thread knob's tests are in test_threads.py."""

from __future__ import annotations

from types import ModuleType

import cuda_emulator
import numpy as np
import pytest
from fake_cupy import simulated_cuda
from kernel_testing import op_math

import autograd
from autograd.backend import to_device
from autograd.kernels import conv_gemm, norm, registry, softmax, winograd
from autograd.kernels.conv import Window
from autograd.nn import functional as F

OPS_WITH_KERNELS = ["sigmoid", "silu", "silu_backward", "erf", "erfc", "softmax",
                    "softmax_backward", "group_norm", "group_norm_backward", "group_norm_silu",
                    "group_norm_silu_backward", "im2col", "col2im"]


@pytest.mark.parametrize("op", OPS_WITH_KERNELS)
def test_every_kernel_op_has_a_cpu_and_a_cuda_fast_path(op):
    assert set(registry.fast_paths(op)) == {"cpu", "cuda"}
    assert registry.lookup(op, np.zeros((2, 3, 4))) is not None


def test_the_simulated_cupy_has_no_fast_paths_and_the_emulator_enables_them():
    with simulated_cuda():
        x = to_device(np.zeros((2, 3, 4)), "cuda")
        assert registry.device_type(x) is None
        assert all(registry.lookup(op, x) is None for op in OPS_WITH_KERNELS)
    if not cuda_emulator.available():
        pytest.skip("the CUDA emulator needs g++")
    with cuda_emulator.emulated_cuda():
        x = to_device(np.zeros((2, 3, 4)), "cuda")
        assert registry.device_type(x) == "cuda"
        assert registry.lookup("group_norm", x) in registry.fast_paths("group_norm")["cuda"]
    assert "fake_cupy" not in registry.DEVICE_TYPES


def test_without_hides_the_named_fast_paths_inside_only():
    channels = winograd.MIN_CHANNELS
    x, weight = np.ones((1, channels, 5, 5)), np.ones((3, channels, 3, 3))
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), (5, 5))
    expected = F.conv2d(autograd.Tensor(x), autograd.Tensor(weight), padding=1).numpy()
    before = registry.fast_paths("conv2d")
    assert registry.lookup("conv2d", x, weight, window=window, groups=1) is (
        winograd.conv2d_winograd)
    with registry.without(winograd.conv2d_winograd):
        assert registry.lookup("conv2d", x, weight, window=window, groups=1) is (
            conv_gemm.conv2d_gemm)
        np.testing.assert_allclose(F.conv2d(autograd.Tensor(x), autograd.Tensor(weight),
                                            padding=1).numpy(), expected, rtol=1e-12)
    with pytest.raises(RuntimeError), registry.without(winograd.conv2d_winograd,
                                                       conv_gemm.conv2d_gemm):
        assert registry.lookup("conv2d", x, weight, window=window, groups=1) is None
        raise RuntimeError("restored on the way out, too")
    assert registry.fast_paths("conv2d") == before


def test_register_refuses_unknown_devices():
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        registry.register("op", "tpu")


DRIVERS = ("_forward_serial", "_forward_parallel", "_backward_serial", "_backward_parallel")


@pytest.mark.parametrize("reference", [False, True])
def test_environment_switch_selects_the_op_math_at_call_time(monkeypatch, reference):
    def broken(*args):
        raise AssertionError("the compiled kernel ran")

    for module in (norm, softmax):
        for name in DRIVERS:
            monkeypatch.setattr(module, name, broken)
    monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", "1" if reference else "0")
    x = autograd.randn(2, 4, 3, requires_grad=True)

    def run():
        out = F.group_norm(x, 2) + F.scaled_dot_product_attention(x, x, x)
        out.sum().backward()

    if reference:
        run()
        assert x.grad is not None
    else:
        with pytest.raises(AssertionError, match="compiled kernel ran"):
            run()


def test_every_cpu_kernel_compiles_with_the_shared_options():
    # kernels/jit.py: without the GIL (threads), cached, and NumPy's error model (a kernel
    # whose loops divide vectorises only without numba's zero-divisor check)
    from numba.core.registry import CPUDispatcher

    import autograd.kernels as kernels

    modules = [value for value in vars(kernels).values() if isinstance(value, ModuleType)]
    found = [(module.__name__, name, value) for module in modules
             for name, value in vars(module).items() if isinstance(value, CPUDispatcher)]
    assert len(found) >= 20
    for module, name, dispatcher in found:
        options = dispatcher.targetoptions
        assert options.get("nogil") and options.get("error_model") == "numpy", (module, name)
        assert type(dispatcher._cache).__name__ != "NullCache", (module, name)


def test_a_zero_divisor_in_a_kernel_gives_the_op_math_answer():
    # GroupNorm of a constant group with eps=0 divides by sqrt(0): nan, as the math gives,
    # not a ZeroDivisionError from inside the kernel
    x = autograd.tensor(np.ones((2, 4, 3, 3), np.float32))
    fast = F.group_norm(x, 2, eps=0.0).numpy()
    with op_math(), np.errstate(divide="ignore", invalid="ignore"):  # NumPy's own warnings
        math = F.group_norm(x, 2, eps=0.0).numpy()
    np.testing.assert_array_equal(fast, math)
    assert np.isnan(fast).all()
