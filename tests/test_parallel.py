"""Replicas: a batch's gradient as slices on worker threads equals the whole batch's, does
not depend on the number of workers, and follows the optimizer's updates."""

from __future__ import annotations

import numpy as np
import pytest
from module_testing import small_net

import autograd
from autograd import nn
from autograd.nn.parallel import Replicas, parallel_apply, sliced_forward


def slice_losses(x: np.ndarray, target: np.ndarray, slices: int):
    size = len(x) // slices
    return [lambda model, part=slice(i * size, (i + 1) * size):
            ((model(autograd.Tensor(x[part])) - autograd.Tensor(target[part])) ** 2).mean()
            / slices for i in range(slices)]


@pytest.mark.parametrize("slices", [1, 2, 3])
def test_slices_give_the_whole_batch_gradient_whatever_the_workers(slices):
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((6, 2, 5, 5)), rng.standard_normal((6, 1, 5, 5))
    net = small_net()
    loss = ((net(autograd.Tensor(x)) - autograd.Tensor(target)) ** 2).mean()
    loss.backward()
    expected = [p.grad.numpy().copy() for p in net.parameters()]
    replicas = Replicas(net, slices)
    results = []
    for workers in (1, 2):
        values = replicas.backward(slice_losses(x, target, slices), workers=workers)
        assert sum(float(v) for v in values) == pytest.approx(loss.item(), rel=1e-12)
        results.append([p.grad.numpy().copy() for p in net.parameters()])
    for whole, serial, threaded in zip(expected, *results):
        np.testing.assert_allclose(serial, whole, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(threaded, serial)  # bit for bit


def test_replicas_follow_optimizer_updates_and_rebinding():
    rng = np.random.default_rng(1)
    x, target = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((4, 1, 3, 3))
    net, reference = small_net(), small_net()
    replicas = Replicas(net, 2)
    optimizer = autograd.optim.SGD(net.parameters(), lr=0.1)
    reference_optimizer = autograd.optim.SGD(reference.parameters(), lr=0.1)
    for step in range(3):
        replicas.backward(slice_losses(x, target, 2), workers=2)
        optimizer.step()
        reference_optimizer.zero_grad()
        ((reference(autograd.Tensor(x)) - autograd.Tensor(target)) ** 2).mean().backward()
        reference_optimizer.step()
        if step == 1:  # a parameter rebound to a new array is picked up too
            first = next(iter(net.parameters()))
            first.data = first.data.copy()
    for mine, theirs in zip(net.parameters(), reference.parameters()):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="dropout"):
        Replicas(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)), 2)
    with pytest.raises(ValueError, match="count"):
        Replicas(nn.Linear(2, 2), 0)
    with pytest.raises(ValueError, match="2 replicas"):
        Replicas(nn.Linear(2, 2), 2).backward([lambda m: m.weight.sum()], workers=1)


def test_parallel_apply_and_sliced_forward_match_serial_calls():
    net = small_net()
    x = np.random.default_rng(2).standard_normal((5, 2, 4, 4))
    expected = net(autograd.Tensor(x)).numpy()
    with autograd.no_grad():
        outputs = parallel_apply([net, net], [(autograd.Tensor(x[:2]),),
                                              (autograd.Tensor(x[2:]),)], workers=2)
        assert not any(o.requires_grad for o in outputs)  # the caller's grad mode
        for workers in (1, 2, 3, 8):
            np.testing.assert_allclose(sliced_forward(net, workers)(x), expected,
                                       rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([o.numpy() for o in outputs]), expected,
                               rtol=1e-12, atol=1e-12)

    def model(x, t, scale=1.0, labels=None):  # array arguments are cut, others passed
        return x * scale + t[:, None] + labels[:, None]

    x, t, labels = np.arange(6.0).reshape(3, 2), np.arange(3.0), np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(sliced_forward(model, 2)(x, t, scale=2.0, labels=labels),
                                  model(x, t, scale=2.0, labels=labels))
    with pytest.raises(ValueError, match="2 modules, 1 inputs"):
        parallel_apply([net, net], [(x,)])
