"""Checks you can trust (#13): gradcheck fails on NaN and non-reentrant backward, grad mode
as PyTorch, in-place changes of saved outputs caught, subgradients at ties, optimizer
settings refused."""

from __future__ import annotations

import numpy as np
import pytest

import autograd
from autograd import optim
from autograd.function import Function
from autograd.gradcheck import GradcheckError


def _x(*values):
    return autograd.tensor(np.array(values, dtype=np.float64), requires_grad=True)


def test_gradcheck_fails_on_nan_numerical_gradient():
    with pytest.raises(GradcheckError, match=r"non-finite.*input 0 at index \(0,\)"):
        autograd.gradcheck(lambda t: (t * np.nan).sum(), [_x(1.0, 2.0)])


def test_gradcheck_fails_on_nan_analytic_gradient():
    with pytest.raises(GradcheckError, match="non-finite"):
        autograd.gradcheck(lambda t: (t - 1.0).sqrt(), [_x(1.0, 2.0)])  # d sqrt at 0 = inf
    assert not autograd.gradcheck(lambda t: t * np.nan, [_x(1.0)], raise_exception=False)


def test_gradcheck_directional_fails_on_nan():
    with pytest.raises(GradcheckError, match="non-finite"):
        autograd.gradcheck_directional(lambda t: (t * np.nan).sum(), [_x(1.0, 2.0)])


class _Noisy(Function):
    """Identity whose backward adds a different tiny error each run."""
    calls = 0

    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        _Noisy.calls += 1
        return grad * (1 + 1e-9 * _Noisy.calls)


class _Garbage(Function):
    """a + 0 * b, whose backward gives b a nonzero gradient."""

    def forward(self, a, b):
        return a.copy()

    def backward(self, grad):
        return grad, np.ones_like(grad)


def test_gradcheck_fails_when_backward_is_not_reentrant():
    with pytest.raises(GradcheckError, match="not reentrant"):
        autograd.gradcheck(lambda t: _Noisy.apply(t), [_x(1.0, 2.0)])
    assert autograd.gradcheck(lambda t: _Noisy.apply(t), [_x(1.0, 2.0)], nondet_tol=1e-6)
    with pytest.raises(GradcheckError, match="not reentrant"):
        autograd.gradcheck_directional(lambda t: _Noisy.apply(t), [_x(1.0, 2.0)])


def test_gradcheck_wants_zero_gradient_for_an_unused_input():
    with pytest.raises(GradcheckError, match="input 1"):
        autograd.gradcheck(lambda a, b: _Garbage.apply(a, b), [_x(1.0), _x(2.0)])
    assert autograd.gradcheck(lambda a, b: a * 2, [_x(1.0), _x(2.0)])


def test_set_grad_enabled_as_call_context_and_decorator():
    assert autograd.is_grad_enabled()

    @autograd.set_grad_enabled(False)
    def inside():
        return autograd.is_grad_enabled()

    assert autograd.is_grad_enabled(), "decorating switched grad mode off"
    assert inside() is False and autograd.is_grad_enabled()
    with autograd.set_grad_enabled(False):
        assert not autograd.is_grad_enabled()
    assert autograd.is_grad_enabled()
    try:
        autograd.set_grad_enabled(False)
        assert not autograd.is_grad_enabled()
    finally:
        autograd.set_grad_enabled(True)
    assert autograd.is_grad_enabled()


@pytest.mark.parametrize("op", [
    lambda t: t.amax(dim=0), lambda t: t.amin(dim=0), lambda t: t.exp(),
    lambda t: t.sigmoid(), lambda t: t.tanh(), lambda t: t.softmax(dim=0),
    lambda t: t.log_softmax(dim=0),
])
def test_in_place_change_of_a_saved_output_raises(op):
    out = op(_x(1.0, 3.0, 2.0))
    out.data[...] = 0.0
    out._version_counter.value += 1  # what an in-place op on the output does
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.sum().backward()


def test_ties_share_the_gradient():
    a, b = _x(1.0, 2.0), _x(1.0, 3.0)
    autograd.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.5, 0.0])
    np.testing.assert_array_equal(b.grad.data, [0.5, 1.0])
    a, b = _x(1.0, 2.0), _x(1.0, 3.0)
    autograd.minimum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.5, 1.0])
    np.testing.assert_array_equal(b.grad.data, [0.5, 0.0])
    x = _x(3.0, 1.0, 3.0, 3.0)
    x.amax().backward()
    np.testing.assert_allclose(x.grad.data, [1 / 3, 0.0, 1 / 3, 1 / 3])
    x = _x(1.0, 1.0, 2.0)
    x.amin().backward()
    np.testing.assert_allclose(x.grad.data, [0.5, 0.5, 0.0])


@pytest.mark.parametrize("make", [
    lambda p, v: optim.SGD(p, lr=v), lambda p, v: optim.Adam(p, lr=v),
    lambda p, v: optim.AdamW(p, lr=v), lambda p, v: optim.Adam(p, eps=v),
    lambda p, v: optim.AdamW(p, weight_decay=v), lambda p, v: optim.Adam(p, betas=(v, 0.9)),
    lambda p, v: optim.SGD(p, lr=0.1, momentum=v),
])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_optimizer_refuses_bad_settings(make, value):
    with pytest.raises(ValueError, match="must be a finite number"):
        make([_x(1.0)], value)
