"""The engine's contract: dtype policy, backward semantics, graph release, grad modes,
in-place detection and deep graphs."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import autograd
from autograd import nn

# ---- construction and dtypes --------------------------------------------------------------


def test_python_data_becomes_float32_and_numpy_keeps_its_dtype():
    assert autograd.tensor([1, 2, 3]).dtype == np.float32
    assert autograd.tensor(2.5).dtype == np.float32
    assert autograd.Tensor(np.zeros(3)).dtype == np.float64
    assert autograd.Tensor(np.zeros(3, np.float32)).dtype == np.float32
    assert autograd.Tensor(np.arange(3)).dtype == np.int64
    assert autograd.tensor([1.0], dtype=np.float64).dtype == np.float64


def test_tensor_copies_but_Tensor_and_from_numpy_share_memory():
    array = np.zeros(3)
    assert not np.shares_memory(autograd.tensor(array).numpy(), array)
    assert np.shares_memory(autograd.Tensor(array).numpy(), array)
    assert np.shares_memory(autograd.from_numpy(array).numpy(), array)


def test_casts():
    x = autograd.tensor([1.5, 2.5])
    assert x.double().dtype == np.float64
    assert x.double().float().dtype == np.float32
    assert x.to(np.float64).dtype == np.float64
    assert x.long().dtype == np.int64


def test_scalars_never_change_a_tensors_dtype():
    x = autograd.tensor([1.0, 2.0])
    schedule = np.linspace(0.1, 0.9, 10)  # float64, like a noise schedule
    for result in (x * 2.0, 2.0 * x, x + np.float64(0.5), schedule[3] * x, x / schedule[4],
                   x - schedule[:2], schedule[:2] * x, x**2, 2.0**x, x * np.int64(3)):
        assert result.dtype == np.float32, result
    assert (autograd.tensor([1.0], dtype=np.float64) * np.float32(2)).dtype == np.float64


def test_mixing_float32_and_float64_tensors_is_an_error():
    with pytest.raises(TypeError, match="float32 and float64"):
        autograd.tensor([1.0]) + autograd.tensor([1.0], dtype=np.float64)


def test_integer_tensors_join_float_tensors_as_that_float():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = x * autograd.Tensor(np.array([2, 3]))
    assert y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 3])


def test_only_floating_tensors_can_require_grad():
    with pytest.raises(RuntimeError, match="floating"):
        autograd.Tensor(np.arange(3), requires_grad=True)


def test_factories_and_generators():
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    a = autograd.randn(2, 3, generator=g1)
    b = autograd.randn((2, 3), generator=g2)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.dtype == np.float32 and a.shape == (2, 3)
    assert autograd.zeros(2, 3).shape == (2, 3) and autograd.ones(4).numpy().sum() == 4
    assert autograd.arange(5).dtype == np.int64
    assert autograd.arange(0, 1, 0.25).dtype == np.float32
    autograd.manual_seed(3)
    first = autograd.rand(3).numpy()
    autograd.manual_seed(3)
    np.testing.assert_array_equal(first, autograd.rand(3).numpy())
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        autograd.randn(2, generator=5)


def test_tensor_basics():
    x = autograd.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert x.shape == (2, 2) and x.ndim == 2 and x.size() == (2, 2) and x.size(1) == 2
    assert x.numel() == 4 and len(x) == 2
    assert x.sum().item() == 10.0
    assert x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert "tensor(" in repr(x)
    assert np.asarray(x).shape == (2, 2)
    with pytest.raises(ValueError, match="one element"):
        x.item()


def test_numpy_arrays_on_the_left_defer_to_tensor():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, autograd.Tensor) and y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        autograd.ones(2, 3) @ autograd.ones(4, 5)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        autograd.ones(2, 3) + autograd.ones(4, 5)


# ---- backward -----------------------------------------------------------------------------


def test_backward_needs_a_gradient_for_non_scalars():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    (x * 2).backward(autograd.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 20.0])
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).backward(np.ones(3))


def test_backward_on_a_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        autograd.tensor([1.0]).sum().backward()


def test_gradients_accumulate_across_backward_calls():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3):
        (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * 2 * x.numpy())


def test_a_shared_input_gets_the_sum_of_its_uses():
    x = autograd.tensor(3.0, requires_grad=True)
    y = x * x + x * 2 + x  # d/dx = 2x + 3
    y.backward()
    assert x.grad.item() == 9.0


def test_broadcast_gradients_are_summed_back_to_each_shape_and_dtype():
    a = autograd.Tensor(np.ones((1, 3)), requires_grad=True)
    b = autograd.Tensor(np.ones((4, 1)), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (1, 3) and b.grad.shape == (4, 1)
    np.testing.assert_array_equal(a.grad.numpy(), np.full((1, 3), 4.0))
    np.testing.assert_array_equal(b.grad.numpy(), np.full((4, 1), 3.0))


def test_second_backward_needs_retain_graph():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_saved_arrays_are_released_after_backward():
    x = autograd.Tensor(np.ones(1000), requires_grad=True)
    hidden = x.exp()
    saved = weakref.ref(hidden.grad_fn.saved[0])
    y = (hidden * x).sum()
    del hidden
    gc.collect()
    assert saved() is not None
    y.backward()
    gc.collect()
    assert saved() is None, "the graph still holds exp's saved output"


def test_a_chain_of_ten_thousand_ops_backwards_without_recursion():
    x = autograd.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad.item() == 1.0


def test_retain_grad_fills_a_non_leaf():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad.numpy(), [6.0, 12.0])


def test_detach_cuts_the_graph_and_shares_memory():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.grad_fn is None
    y = x * 2
    assert np.shares_memory(y.detach().numpy(), y.numpy())


# ---- grad modes ---------------------------------------------------------------------------


def test_no_grad_as_context_and_decorator_and_enable_grad_inside():
    x = autograd.tensor([1.0], requires_grad=True)
    with autograd.no_grad():
        assert not (x * 2).requires_grad
        with autograd.enable_grad():
            assert (x * 2).requires_grad
        assert not autograd.is_grad_enabled()
    assert autograd.is_grad_enabled()

    @autograd.no_grad()
    def inference(t):
        return t * 2

    assert not inference(x).requires_grad
    assert autograd.is_grad_enabled()
    with autograd.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


# ---- in-place modification ----------------------------------------------------------------


def test_modifying_a_saved_input_in_place_is_detected():
    w = autograd.tensor([1.0, 2.0], requires_grad=True)
    x = autograd.tensor([3.0, 4.0])
    y = (w * x).sum()
    x.add_(1.0)  # mul saved x for w's gradient
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_modifying_a_saved_output_in_place_is_detected():
    x = autograd.tensor([0.5], requires_grad=True)
    y = x.exp()
    z = y.sum()
    with autograd.no_grad():
        y.mul_(2.0)  # exp saved its output
    with pytest.raises(RuntimeError, match="in-place"):
        z.backward()


def test_a_view_shares_its_base_version_counter():
    x = autograd.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = autograd.tensor([1.0, 1.0], requires_grad=True)
    row = x[0]
    y = (w * row).sum()
    x[0, 0] = 10.0  # writes through the view that mul saved
    with pytest.raises(RuntimeError, match="in-place"):
        y.backward()


def test_an_unsaved_input_may_change():
    x = autograd.tensor([1.0, 2.0])
    w = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = (w + x).sum()  # add saves nothing
    x.add_(5.0)
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])


def test_optimizer_step_before_backward_is_detected():
    layer = nn.Linear(2, 1)
    loss = layer(autograd.tensor([[1.0, 2.0]])).sum()
    layer.weight.grad = autograd.zeros(1, 2)
    autograd.optim.SGD(layer.parameters(), lr=0.1).step()
    with pytest.raises(RuntimeError, match="in-place"):
        loss.backward()


def test_in_place_on_a_leaf_that_requires_grad_needs_no_grad():
    w = autograd.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.add_(1.0)
    with autograd.no_grad():
        w.add_(1.0)
    assert w.item() == 2.0


def test_augmented_assignment_rebinds_when_autograd_records():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    alias = h
    h += 1  # h = h + 1: the graph stays right
    assert alias is not h
    h.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])
    plain = autograd.tensor([1.0])
    same = plain
    plain += 1  # no autograd history: a true in-place update
    assert same is plain and plain.item() == 2.0


# ---- memory over many training steps ------------------------------------------------------


def test_memory_does_not_grow_over_a_thousand_training_steps():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.SiLU(), nn.Linear(32, 1))
    optimizer = autograd.optim.AdamW(model.parameters(), lr=1e-3)
    x = autograd.Tensor(rng.standard_normal((16, 8)).astype(np.float32))
    target = autograd.Tensor(rng.standard_normal((16, 1)).astype(np.float32))

    def train(steps):
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train(20)  # warm up caches and optimizer state
    gc.collect()
    tracemalloc.start()
    train(100)
    gc.collect()
    after_100 = tracemalloc.get_traced_memory()[0]
    train(900)
    gc.collect()
    after_1000 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after_1000 - after_100 < 50_000, (after_100, after_1000)
