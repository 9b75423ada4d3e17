"""Device bookkeeping: Device names, where tensors live, moves, and the errors for a missing
GPU and for tensors on two devices. The "cuda" legs run on a real GPU where there is one and
on the simulated CuPy of tests/fake_cupy.py everywhere."""

import numpy as np
import pytest
from fake_cupy import simulated_cuda, transfers

import autograd
from autograd import backend


def test_device_names_parse_compare_and_print():
    assert autograd.device("cuda") == autograd.Device("cuda:0") == "cuda:0"
    assert autograd.Device("cuda:0") == "cuda"
    assert autograd.device("cpu") == "cpu" and autograd.device(None) == "cpu"
    assert autograd.Device("cuda:1") != "cuda:0"
    assert autograd.Device("cuda", 2).index == 2 and str(autograd.Device("cuda", 2)) == "cuda:2"
    assert repr(autograd.Device("cuda:1")) == "device(type='cuda', index=1)"
    assert len({autograd.Device("cuda"), autograd.Device("cuda:0")}) == 1
    for bad in ("gpu", "cuda:x", "cpu:0", "CUDA", "mps"):
        with pytest.raises(ValueError, match="unknown device"):
            autograd.Device(bad)
    with pytest.raises(TypeError, match="a device is a string"):
        autograd.Device(0)


def test_without_a_gpu_asking_for_cuda_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_problem",
                        "CuPy is not installed (No module named 'cupy'); " +
                        backend.CUPY_INSTALL_HINT)
    assert not autograd.cuda.is_available() and autograd.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match=r"device 'cuda' is not available: CuPy is not "
                       r"installed.*tinydiff\[cuda12\]"):
        autograd.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match="not available"):
        autograd.ones(2).to("cuda")
    assert autograd.ones(2).to("cpu").device == "cpu"  # the CPU never needs CuPy


def test_the_cupy_probe_reports_an_import_failure_or_a_missing_gpu(monkeypatch):
    import builtins

    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_problem", None)
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        backend.cuda_module()
    assert not backend.cuda_is_available()


def test_tensors_know_their_device_and_move(device):
    x = autograd.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    assert x.device == device and x.is_cuda == (device != "cpu")
    back = x.to("cpu")
    assert back.device == "cpu" and back.numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert x.to(device) is x and x.to(x) is x
    moved = autograd.zeros(3).to(device, autograd.float64)
    assert moved.device == device and moved.dtype == np.float64
    assert x.to(dtype=autograd.float64, device="cpu").device == "cpu"
    assert x.cpu().device == "cpu"
    if device != "cpu":
        assert x.cpu().cuda().device == "cuda:0"
        assert "device='cuda:0'" in repr(x)


def test_moving_is_differentiable(device):
    x = autograd.tensor([1.0, -2.0, 3.0], dtype=autograd.float64, requires_grad=True)
    y = (x.to(device) * autograd.tensor([2.0, 3.0, 4.0], dtype=autograd.float64,
                                        device=device)).sum()
    y.backward()
    assert x.grad.device == "cpu" and x.grad.numpy().tolist() == [2.0, 3.0, 4.0]


def test_factories_make_tensors_on_the_device(device):
    made = [autograd.zeros(2, 3, device=device), autograd.ones((2,), device=device),
            autograd.full((2, 2), 7.0, device=device), autograd.arange(5, device=device),
            autograd.linspace(0, 1, 5, device=device), autograd.eye(3, device=device),
            autograd.randn(2, 2, device=device), autograd.rand(3, device=device),
            autograd.randint(0, 9, (4,), device=device),
            autograd.zeros_like(autograd.ones(2, device=device)),
            autograd.randn_like(autograd.ones(2, device=device))]
    assert all(t.device == device for t in made)
    assert made[3].dtype == np.int64 and made[3].cpu().numpy().tolist() == [0, 1, 2, 3, 4]


def test_a_seed_gives_the_same_random_tensor_on_every_device(device):
    on_device = autograd.randn(3, 4, generator=np.random.default_rng(5), device=device)
    on_cpu = autograd.randn(3, 4, generator=np.random.default_rng(5))
    np.testing.assert_array_equal(on_device.cpu().numpy(), on_cpu.numpy())
    filled = autograd.zeros(3, device=device).normal_(generator=np.random.default_rng(1))
    expected = np.random.default_rng(1).normal(0.0, 1.0, size=3).astype(np.float32)
    np.testing.assert_array_equal(filled.cpu().numpy(), expected)


def test_tensors_on_two_devices_in_one_op_raise_naming_both(gpu_device):
    a, b = autograd.ones(3), autograd.ones(3, device=gpu_device)
    for op in (lambda: a + b, lambda: b * a, lambda: autograd.matmul(a, b),
               lambda: autograd.cat([a, b]), lambda: autograd.maximum(b, a), lambda: a < b):
        with pytest.raises(RuntimeError, match="cpu and cuda:0|cuda:0 and cpu"):
            op()
    with pytest.raises(RuntimeError, match="in-place update of a tensor on cpu with a tensor "
                       "on cuda:0"):
        a.add_(b)
    a.copy_(b)  # copy_ reads from any device, as PyTorch's
    assert a.device == "cpu"


def test_numpy_constants_and_numbers_join_device_tensors(gpu_device):
    x = autograd.ones(2, 3, device=gpu_device)
    y = x * np.float64(2.0) + np.arange(3, dtype=np.float32) - 1
    assert y.device == gpu_device and y.dtype == np.float32
    np.testing.assert_array_equal(y.cpu().numpy(), np.ones((2, 3)) * 2 + np.arange(3) - 1)
    x[0, 1] = 5.0
    x[1] = np.array([7.0, 8.0, 9.0])
    assert x.cpu().numpy().tolist() == [[1.0, 5.0, 1.0], [7.0, 8.0, 9.0]]


def test_a_gpu_tensor_does_not_turn_into_numpy_silently(gpu_device):
    x = autograd.ones(2, device=gpu_device)
    with pytest.raises(TypeError, match="cannot convert to NumPy a tensor on cuda:0: copy it "
                       "to the host first with .cpu()"):
        x.numpy()
    with pytest.raises(TypeError, match="copy it to the host first"):
        np.asarray(x)
    assert x.numpy(force=True).tolist() == [1.0, 1.0]
    assert x.sum().item() == 2.0 and x.tolist() == [1.0, 1.0]


def test_host_transfers_happen_only_when_asked():
    with simulated_cuda():
        x = autograd.randn(4, 4, device="cuda", requires_grad=True)
        assert transfers["to_device"] == 1
        loss = ((x * 3.0 + 1.0).tanh() * x).sum()
        loss.backward()
        assert transfers["to_host"] == 0
        assert isinstance(loss.item(), float)
        assert transfers["to_host"] == 1


def test_the_simulated_cupy_is_strict():
    with simulated_cuda() as cupy:
        a = cupy.ones(3)
        with pytest.raises(TypeError, match="numpy.exp called on a device array"):
            np.exp(a)
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
            np.asarray(a)
        with pytest.raises(TypeError, match="got a NumPy array where CuPy needs"):
            a + np.ones(3)
        with pytest.raises(AttributeError, match="lacks it"):
            cupy.errstate  # noqa: B018 (CuPy has no errstate)
        with pytest.raises(TypeError, match="has no keyword argument"):
            cupy.zeros(3, like=a)
        assert isinstance(a.sum(), cupy.ndarray) and a.sum().shape == ()
        assert a.astype(np.float64, copy=False) is a


def test_moves_pass_the_gradient_check():
    rng = np.random.default_rng(4)
    with simulated_cuda():
        for shape in [(3,), (2, 3), (1, 4, 2)]:
            x = autograd.tensor(rng.standard_normal(shape), dtype=autograd.float64,
                                requires_grad=True)
            assert autograd.gradcheck(
                lambda t: (t.to("cuda").tanh() * t.to("cuda")).sum(-1).cpu(), [x])
