"""Tensor and module hooks: PyTorch's arguments, return values and firing order."""

from __future__ import annotations

import numpy as np
import pytest

import autograd
from autograd import nn


def test_tensor_hook_replaces_the_gradient_before_it_reaches_grad():
    x = autograd.tensor([1.0, 2.0, 3.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = x.register_hook(lambda g: g * 2)
    (x * x).sum().backward()
    np.testing.assert_array_equal(seen[0], [2.0, 4.0, 6.0])  # before the doubling hook
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0, 12.0])
    handle.remove()
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0, 6.0])


def test_non_leaf_hook_gets_the_complete_gradient_and_retain_grad_sees_the_replacement():
    x = autograd.tensor([1.0, -2.0], requires_grad=True)
    y = x * 3
    y.retain_grad()
    calls = []
    y.register_hook(lambda g: calls.append(g.numpy().copy()) or g + 1)
    (y * y + y).sum().backward()  # dL/dy = 2y + 1, from two uses of y, summed first
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0], [7.0, -11.0])
    np.testing.assert_array_equal(y.grad.numpy(), [8.0, -10.0])
    np.testing.assert_array_equal(x.grad.numpy(), [24.0, -30.0])


def test_hook_on_a_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        autograd.tensor([1.0]).register_hook(lambda g: g)


def _linear() -> nn.Linear:
    layer = nn.Linear(2, 1)
    layer.weight.data[...] = [[1.0, 2.0]]
    layer.bias.data[...] = [0.5]
    return layer


def test_module_hooks_fire_in_pytorch_order_with_its_arguments():
    layer, log = _linear(), []
    x = autograd.tensor([[1.0, 1.0], [2.0, 3.0]], requires_grad=True)
    layer.register_forward_pre_hook(lambda m, args: log.append(("pre1", m, args)))
    layer.register_forward_pre_hook(lambda m, args: log.append(("pre2",)))
    layer.register_forward_pre_hook(lambda m, args: log.append(("pre0",)), prepend=True)
    layer.register_forward_hook(lambda m, args, out: log.append(("forward", out.numpy().copy())))
    layer.register_full_backward_hook(lambda m, gi, go: log.append(("backward", gi, go)))
    out = layer(x)  # [3.5, 8.5]
    assert [entry[0] for entry in log] == ["pre0", "pre1", "pre2", "forward"]
    assert log[1][1] is layer and log[1][2][0] is x
    np.testing.assert_array_equal(log[3][1], [[3.5], [8.5]])
    (out * out).sum().backward()  # grad_output = 2 out
    name, grad_input, grad_output = log[4]
    assert name == "backward" and len(grad_input) == 1 and len(grad_output) == 1
    np.testing.assert_array_equal(grad_output[0].numpy(), [[7.0], [17.0]])
    np.testing.assert_array_equal(grad_input[0].numpy(), [[7.0, 14.0], [17.0, 34.0]])
    np.testing.assert_array_equal(layer.weight.grad.numpy(), [[41.0, 58.0]])


def test_backward_hook_without_input_grad_gets_none_and_can_replace_grad_input():
    layer = _linear()
    got = []
    layer.register_full_backward_hook(lambda m, gi, go: got.append((gi, go)))
    layer(autograd.tensor([[1.0, 1.0]])).sum().backward()  # fixed data: no input grad
    assert got[0][0] == (None,)
    np.testing.assert_array_equal(got[0][1][0].numpy(), [[1.0]])
    np.testing.assert_array_equal(layer.weight.grad.numpy(), [[1.0, 1.0]])

    halve = layer.register_full_backward_hook(lambda m, gi, go: (gi[0] * 0.5,))
    x = autograd.tensor([[1.0, 1.0]], requires_grad=True)
    layer(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.5, 1.0]])
    halve.remove()
    x.grad = None
    layer(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 2.0]])


def test_hooks_replace_args_and_output_and_removed_hooks_stop():
    layer = _linear()
    x = autograd.tensor([[1.0, 1.0]])
    pre = layer.register_forward_pre_hook(lambda m, args: args[0] * 2)  # one value: wrapped
    post = layer.register_forward_hook(lambda m, args, out: out + 100)
    np.testing.assert_array_equal(layer(x).numpy(), [[106.5]])
    pre.remove()
    np.testing.assert_array_equal(layer(x).numpy(), [[103.5]])
    post.remove()
    np.testing.assert_array_equal(layer(x).numpy(), [[3.5]])
    assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_backward_hooks_of_nested_modules_fire_inner_first_with_two_inputs():
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _linear()

        def forward(self, a, b):
            return self.inner(a) * b

    model, order = Pair(), []
    model.register_full_backward_hook(lambda m, gi, go: order.append(("outer", gi)))
    model.inner.register_full_backward_hook(lambda m, gi, go: order.append(("inner", gi)))
    a = autograd.tensor([[1.0, 1.0]], requires_grad=True)
    b = autograd.tensor([[2.0]], requires_grad=True)
    model(a, b).sum().backward()
    assert [name for name, _ in order] == ["inner", "outer"]
    grad_a, grad_b = order[1][1]
    np.testing.assert_array_equal(grad_a.numpy(), [[2.0, 4.0]])
    np.testing.assert_array_equal(grad_b.numpy(), [[3.5]])
