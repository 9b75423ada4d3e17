"""Optimizers and the EMA on a device: training on "cuda" gives the CPU's parameters; no
device-to-host copy inside a training step; optimizer and EMA state live on, and follow,
their parameters' device; state dicts across devices; the fused Adam kernel (cuda/adam.cu)
against its reference. The "cuda" legs run on a real GPU where there is one (the kernel
itself) and on the simulated CuPy (tests/fake_cupy.py) everywhere (the reference)."""

from __future__ import annotations

import fake_cupy
import numpy as np
import pytest
from device_testing import host, simulated, tolerance

import autograd
from autograd import nn, optim
from autograd.backend import device_of, to_device
from autograd.kernels import registry, use_reference_kernels
from autograd.kernels.adam import AdamSettings, adam_step, adam_step_reference


def mlp() -> nn.Module:
    autograd.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 2)).double()


def conv_net() -> nn.Module:
    autograd.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                         nn.Conv2d(4, 1, 1)).double()


def batches(model_name: str, steps: int):
    rng = np.random.default_rng(3)
    shape, target = ((6, 3), (6, 2)) if model_name == "mlp" else ((3, 1, 5, 5), (3, 1, 5, 5))
    return [(rng.standard_normal(shape), rng.standard_normal(target)) for _ in range(steps)]


def make_optimizer(name: str, params):
    if name == "adamw":
        return optim.AdamW(params, lr=3e-2, weight_decay=0.1)
    if name == "adam_amsgrad":
        return optim.Adam(params, lr=3e-2, weight_decay=0.05, amsgrad=True)
    if name == "adam_maximize":
        return optim.Adam(params, lr=3e-2, maximize=True)
    return optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)


def train(model_name: str, optimizer_name: str, device: str, steps: int = 4):
    """Train `steps` steps on `device` with clip_grad_norm_ and an EMA; returns the model,
    the optimizer, the EMA and the host copies made inside the steps (simulator only)."""
    model = (mlp() if model_name == "mlp" else conv_net()).to(device)
    optimizer = make_optimizer(optimizer_name, model.parameters())
    ema = optim.EMAModel(model.parameters(), decay=0.95)
    data = [(autograd.tensor(x, device=device), autograd.tensor(y, device=device))
            for x, y in batches(model_name, steps)]
    fake_cupy.transfers.clear()
    for x, y in data:
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.3)
        optimizer.step()
        ema.step(model.parameters())
    return model, optimizer, ema, fake_cupy.transfers["to_host"]


@pytest.mark.parametrize("optimizer_name", ["adamw", "adam_amsgrad", "adam_maximize", "sgd"])
@pytest.mark.parametrize("model_name", ["mlp", "conv"])
def test_training_on_a_device_gives_the_cpus_parameters(model_name, optimizer_name, device):
    expected_model, _, expected_ema, _ = train(model_name, optimizer_name, "cpu")
    model, optimizer, ema, _ = train(model_name, optimizer_name, device)
    for p, e in zip(model.parameters(), expected_model.parameters()):
        assert p.device == device
        np.testing.assert_allclose(host(p), e.numpy(), **tolerance())
    for shadow, e in zip(ema.shadow_params, expected_ema.shadow_params):
        assert device_of(shadow) == device
        np.testing.assert_allclose(host(shadow), e, **tolerance())
    for state in optimizer.state.values():
        assert all(device_of(v) == device for v in state.values() if hasattr(v, "shape"))


@pytest.mark.parametrize("optimizer_name", ["adamw", "adam_amsgrad", "sgd"])
@pytest.mark.parametrize("model_name", ["mlp", "conv"])
def test_a_training_step_copies_nothing_to_the_host(model_name, optimizer_name, gpu_device):
    if not simulated():
        pytest.skip("transfers are counted by the simulated CuPy")
    *_, to_host = train(model_name, optimizer_name, gpu_device, steps=2)
    assert to_host == 0, "forward, backward, clip, step or EMA copied an array to the host"


# ---- the fused Adam step -------------------------------------------------------------------


def test_the_adam_kernel_source_is_packaged():
    from autograd.kernels import cuda

    source = cuda.SOURCE_DIR / "adam.cu"
    assert source in cuda.sources()
    assert source.read_text().count('extern "C" __global__') == 1  # adam_step


SETTINGS = {
    "adamw": dict(weight_decay=0.1, decoupled=True, amsgrad=False, maximize=False),
    "adam_l2": dict(weight_decay=0.05, decoupled=False, amsgrad=False, maximize=False),
    "amsgrad_maximize": dict(weight_decay=0.1, decoupled=True, amsgrad=True, maximize=True),
    "no_decay": dict(weight_decay=0.0, decoupled=False, amsgrad=True, maximize=False),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", SETTINGS, ids=str)
def test_the_fused_adam_step_gives_the_references_numbers(options, dtype, kernel_leg):
    """On a GPU and on the emulator the CUDA kernel runs (its rounding is the reference's,
    operation by operation: equal bit for bit)."""
    gpu_device = "cuda"
    rng = np.random.default_rng(8)
    shape = (37, 29)  # more than one block of threads
    arrays = [rng.standard_normal(shape).astype(dtype) for _ in range(2)]
    moments = [np.zeros(shape, dtype), np.zeros(shape, dtype), np.zeros(shape, dtype)]
    expected = [a.copy() for a in arrays[:1] + moments]
    there = [to_device(a, gpu_device) for a in arrays[:1] + moments]
    if not use_reference_kernels():  # the kernel, not the reference, runs
        assert registry.lookup("adam_step", there[0], to_device(arrays[1], gpu_device),
                               *there[1:]) is not None
    for step in range(1, 4):
        grad = rng.standard_normal(shape).astype(dtype)
        settings = AdamSettings(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, step=step,
                                **SETTINGS[options])
        p, m, v, v_max = expected
        adam_step_reference(p, grad, m, v, v_max if settings.amsgrad else None, settings)
        p, m, v, v_max = there
        adam_step(p, to_device(grad, gpu_device), m, v,
                  v_max if settings.amsgrad else None, settings)
    for name, got, want in zip(["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"], there,
                               expected):
        assert device_of(got) == gpu_device and got.dtype == dtype
        np.testing.assert_array_equal(host(got), want, err_msg=name)


def test_adam_on_a_strided_parameter_takes_the_reference_path(gpu_device):
    rng = np.random.default_rng(9)
    base = rng.standard_normal((6, 8))
    grad = rng.standard_normal((6, 4))
    settings = AdamSettings(1e-2, 0.9, 0.999, 1e-8, 0.1, True, False, False, 1)
    expected = base.copy()
    m, v = np.zeros((6, 4)), np.zeros((6, 4))
    adam_step_reference(expected[:, ::2], grad, m, v, None, settings)
    there = to_device(base, gpu_device)
    xp = autograd.backend.array_module(gpu_device)
    adam_step(there[:, ::2], to_device(grad, gpu_device), xp.zeros((6, 4)), xp.zeros((6, 4)),
              None, settings)  # a view: updated in place, through its strides
    np.testing.assert_array_equal(host(there), expected)


# ---- state on the parameters' device -------------------------------------------------------


@pytest.mark.parametrize("optimizer_name", ["adam_amsgrad", "sgd"])
def test_optimizer_state_follows_a_module_moved_between_steps(optimizer_name, gpu_device):
    data = batches("mlp", 4)

    def run(devices):
        model = mlp()
        optimizer = make_optimizer(optimizer_name, model.parameters())
        for (x, y), device in zip(data, devices):
            model.to(device)
            loss = nn.functional.mse_loss(model(autograd.tensor(x, device=device)),
                                          autograd.tensor(y, device=device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for state in optimizer.state.values():  # moved with the parameters
                assert all(device_of(v) == device for v in state.values()
                           if hasattr(v, "shape"))
        return model

    expected = run(["cpu"] * 4)
    moved = run(["cpu", gpu_device, gpu_device, "cpu"])
    for p, e in zip(moved.parameters(), expected.parameters()):
        np.testing.assert_allclose(p.numpy(), e.numpy(), **tolerance())


def test_optimizer_state_dict_stays_on_the_device_and_loads_onto_any(gpu_device):
    model, optimizer, _, _ = train("mlp", "adam_amsgrad", gpu_device, steps=2)
    fake_cupy.transfers.clear()
    state = optimizer.state_dict()
    if simulated():
        assert fake_cupy.transfers["to_host"] == 0
    arrays = [v for s in state["state"].values() for v in s.values() if hasattr(v, "shape")]
    assert arrays and all(device_of(a) == gpu_device for a in arrays)
    first = next(iter(optimizer.state.values()))
    assert state["state"][0]["exp_avg"] is not first["exp_avg"]  # a copy

    cpu_model = mlp()
    cpu_model.load_state_dict(model.state_dict())
    cpu_optimizer = make_optimizer("adam_amsgrad", cpu_model.parameters())
    cpu_optimizer.load_state_dict(state)  # device arrays onto CPU parameters
    for p in cpu_model.parameters():
        assert all(isinstance(v, np.ndarray) and v.dtype == p.dtype
                   for v in cpu_optimizer.state[p].values() if hasattr(v, "shape"))
    back = make_optimizer("adam_amsgrad", model.parameters())
    back.load_state_dict(cpu_optimizer.state_dict())  # and host arrays onto GPU ones
    float32_model = mlp().float().to(gpu_device)
    float32_optimizer = make_optimizer("adam_amsgrad", float32_model.parameters())
    float32_optimizer.load_state_dict(state)  # in each parameter's dtype
    for p in float32_model.parameters():
        assert all(v.dtype == np.float32 and device_of(v) == gpu_device
                   for v in float32_optimizer.state[p].values() if hasattr(v, "shape"))

    x, y = batches("mlp", 1)[0]
    for net, opt, device in ((model, back, gpu_device), (cpu_model, cpu_optimizer, "cpu")):
        loss = nn.functional.mse_loss(net(autograd.tensor(x, device=device)),
                                      autograd.tensor(y, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p, e in zip(model.parameters(), cpu_model.parameters()):
        np.testing.assert_allclose(host(p), e.numpy(), **tolerance())


def test_ema_follows_its_parameters_and_swaps_them_on_the_device(gpu_device):
    model = mlp()
    ema = optim.EMAModel(model.parameters(), decay=0.5)  # shadows made on the CPU
    reference = mlp()
    reference_ema = optim.EMAModel(reference.parameters(), decay=0.5)
    model.to(gpu_device)
    for net, average in ((model, ema), (reference, reference_ema)):
        for _ in range(3):
            with autograd.no_grad():
                for p in net.parameters():
                    p.copy_(p * 0.9)
            average.step(net.parameters())
    assert all(device_of(s) == gpu_device for s in ema.shadow_params)
    for shadow, e in zip(ema.shadow_params, reference_ema.shadow_params):
        np.testing.assert_array_equal(host(shadow), e)

    current = [host(p).copy() for p in model.parameters()]
    with ema.average_parameters(model.parameters()):  # store, copy_to, restore
        for p, e in zip(model.parameters(), reference_ema.shadow_params):
            assert p.device == gpu_device
            np.testing.assert_array_equal(host(p), e)
    for p, c in zip(model.parameters(), current):
        np.testing.assert_array_equal(host(p), c)

    state = ema.state_dict()
    assert all(device_of(s) == gpu_device for s in state["shadow_params"])
    on_cpu = optim.EMAModel(mlp().parameters())
    on_cpu.load_state_dict(state)  # device shadows into a CPU EMA
    assert all(isinstance(s, np.ndarray) for s in on_cpu.shadow_params)
    assert on_cpu.optimization_step == 3
    back = optim.EMAModel(model.parameters())
    back.load_state_dict(on_cpu.state_dict())  # host shadows onto the GPU
    for shadow, e in zip(back.shadow_params, reference_ema.shadow_params):
        assert device_of(shadow) == gpu_device
        np.testing.assert_array_equal(host(shadow), e)
    assert all(device_of(s) == "cpu" for s in back.to("cpu").shadow_params)
    back.copy_to(model.parameters())  # back on the parameters' device first
    assert all(device_of(s) == gpu_device for s in back.shadow_params)
    with pytest.raises(ValueError, match="shapes differ"):
        back.load_state_dict({**state, "shadow_params": state["shadow_params"][:-1]})
