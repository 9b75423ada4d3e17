"""gradcheck itself: passes correct gradients, catches wrong ones and says where."""

from __future__ import annotations

import numpy as np
import pytest

import autograd
from autograd import Function


class WrongSquare(Function):
    """x^2 with a backward that is wrong at one element."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, grad):
        (x,) = self.saved
        wrong = 2 * x * grad
        wrong.reshape(-1)[-1] += 0.5
        return wrong


def test_gradcheck_passes_a_correct_gradient():
    x = autograd.Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    assert autograd.gradcheck(lambda t: (t * t).sum(dim=0), [x])
    assert autograd.gradcheck_directional(lambda t: (t * t).sum(dim=0), [x])


def test_gradcheck_catches_a_wrong_gradient_and_names_the_element():
    x = autograd.Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    with pytest.raises(autograd.GradcheckError, match=r"input 0 at index \(1, 2\)"):
        autograd.gradcheck(WrongSquare.apply, [x])
    assert not autograd.gradcheck(WrongSquare.apply, [x], raise_exception=False)
    with pytest.raises(autograd.GradcheckError, match="directional"):
        autograd.gradcheck_directional(WrongSquare.apply, [x])


def test_gradcheck_needs_float64():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        autograd.gradcheck(lambda t: t * t, [x])


def test_gradcheck_leaves_the_inputs_and_their_grads_alone():
    x = autograd.Tensor(np.array([0.5, -0.25]), requires_grad=True)
    autograd.gradcheck(lambda t: t.exp(), [x])
    assert x.grad is None
    np.testing.assert_array_equal(x.numpy(), [0.5, -0.25])


def test_gradcheck_runs_on_the_device(gpu_device):
    """The finite differences are taken on the tensors' device; wrong gradients are caught
    there too, and the input is left as it was."""
    x = autograd.Tensor(np.linspace(-1, 1, 5), device=gpu_device, requires_grad=True)
    assert autograd.gradcheck(lambda t: (t * t.exp()).softmax(-1), [x])
    assert autograd.gradcheck_directional(lambda t: t[[0, 0, 3]].logsumexp(0), [x])
    with pytest.raises(autograd.GradcheckError, match=r"input 0 at index \(4,\)"):
        autograd.gradcheck(WrongSquare.apply, [x])
    with pytest.raises(autograd.GradcheckError, match="directional"):
        autograd.gradcheck_directional(WrongSquare.apply, [x])
    assert x.grad is None and x.device == gpu_device
    np.testing.assert_array_equal(x.cpu().numpy(), np.linspace(-1, 1, 5))
