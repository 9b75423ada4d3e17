"""Optimizers against hand-computed updates, PyTorch's AdamW numbers, schedules, EMA, and
a small MLP that learns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import autograd
from autograd import nn, optim
from autograd.optim import lr_scheduler

REFERENCE = Path(__file__).parent / "reference" / "torch_ops.npz"


def _run(optimizer_cls, grads, p0, **settings):
    p = nn.Parameter(p0.copy())
    opt = optimizer_cls([p], **settings)
    trajectory = []
    for g in grads:
        p.grad = autograd.Tensor(g.copy())
        opt.step()
        trajectory.append(p.numpy().copy())
    return trajectory


GRADS = [np.array([0.5, -1.0, 2.0]), np.array([-0.3, 0.1, 1.0]), np.array([1.5, 0.0, -2.0]),
         np.array([0.2, 0.2, 0.2])]
P0 = np.array([1.0, -2.0, 0.5])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_weight_decay_matches_hand_computation(nesterov):
    lr, mu, wd = 0.1, 0.9, 0.01
    dampening = 0.0 if nesterov else 0.2
    p, buffer, expected = P0.copy(), None, []
    for g in GRADS:
        d = g + wd * p
        buffer = d.copy() if buffer is None else mu * buffer + (1 - dampening) * d
        p = p - lr * (d + mu * buffer if nesterov else buffer)
        expected.append(p)
    got = _run(optim.SGD, GRADS, P0, lr=lr, momentum=mu, weight_decay=wd,
               dampening=dampening, nesterov=nesterov)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_and_adamw_match_hand_computation(decoupled):
    lr, (b1, b2), eps, wd = 0.01, (0.8, 0.95), 1e-8, 0.1
    p, m, v, expected = P0.copy(), np.zeros(3), np.zeros(3), []
    for step, g in enumerate(GRADS, start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        expected.append(p)
    cls = optim.AdamW if decoupled else optim.Adam
    got = _run(cls, GRADS, P0, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_adamw_matches_pytorch_exactly():
    ref = np.load(REFERENCE)
    got = _run(optim.AdamW, list(ref["adamw/grads"]), ref["adamw/p0"], lr=1e-2,
               betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    np.testing.assert_array_equal(np.array(got), ref["adamw/params_after_each_step"])


def test_param_groups_have_their_own_settings():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad, b.grad = autograd.Tensor(np.ones(2)), autograd.Tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose(a.numpy(), [0.9, 0.9])
    np.testing.assert_allclose(b.numpy(), [0.0, 0.0])
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [a]})


def test_optimizer_state_dict_resumes_exactly():
    def fresh():
        p = nn.Parameter(P0.copy())
        return p, optim.AdamW([p], lr=0.05)

    p, opt = fresh()
    for g in GRADS:
        p.grad = autograd.Tensor(g.copy())
        opt.step()
    straight = p.numpy().copy()

    p, opt = fresh()
    for g in GRADS[:2]:
        p.grad = autograd.Tensor(g.copy())
        opt.step()
    state, weights = opt.state_dict(), p.numpy().copy()
    p2, opt2 = fresh()
    p2.data = weights
    opt2.load_state_dict(state)
    for g in GRADS[2:]:
        p2.grad = autograd.Tensor(g.copy())
        opt2.step()
    np.testing.assert_array_equal(p2.numpy(), straight)


def test_zero_grad():
    p = nn.Parameter(np.ones(2))
    p.grad = autograd.Tensor(np.ones(2))
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), [0, 0])
    opt.zero_grad()
    assert p.grad is None


def test_warmup_cosine_and_constant_schedules():
    p = nn.Parameter(np.ones(1))
    opt = optim.SGD([p], lr=2.0)
    sched = lr_scheduler.get_cosine_schedule_with_warmup(opt, num_warmup_steps=4,
                                                         num_training_steps=14)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[:5] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert lrs[9] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14] == pytest.approx(0.0, abs=1e-12)
    opt2 = optim.SGD([nn.Parameter(np.ones(1))], lr=1.0)
    const = lr_scheduler.get_constant_schedule_with_warmup(opt2, num_warmup_steps=2)
    seen = []
    for _ in range(5):
        seen.append(const.get_last_lr()[0])
        const.step()
    assert seen == [0.0, 0.5, 1.0, 1.0, 1.0]
    state = sched.state_dict()
    opt3 = optim.SGD([nn.Parameter(np.ones(1))], lr=2.0)
    resumed = lr_scheduler.get_cosine_schedule_with_warmup(opt3, 4, 14)
    resumed.load_state_dict(state)
    assert opt3.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_ema_warmup_decay_and_swap():
    p = nn.Parameter(np.zeros(2))
    ema = optim.EMAModel([p], decay=0.999, use_ema_warmup=True, power=2 / 3)
    assert ema.get_decay(1) == 0.0
    assert ema.get_decay(11) == pytest.approx(1 - (1 + 10) ** (-2 / 3))
    assert ema.get_decay(10**9) == 0.999
    plain = optim.EMAModel([p], decay=0.99)
    assert plain.get_decay(5) == pytest.approx(5 / 14)
    shadow = np.zeros(2)
    for step in range(1, 6):
        with autograd.no_grad():
            p.fill_(float(step))
        ema.step([p])
        decay = ema.get_decay(step)
        shadow = shadow - (1 - decay) * (shadow - step)
    np.testing.assert_allclose(ema.shadow_params[0], shadow)
    with ema.average_parameters([p]):
        np.testing.assert_allclose(p.numpy(), shadow)
    np.testing.assert_array_equal(p.numpy(), [5.0, 5.0])
    restored = optim.EMAModel([p])
    restored.load_state_dict(ema.state_dict())
    np.testing.assert_array_equal(restored.shadow_params[0], ema.shadow_params[0])
    assert restored.optimization_step == 5


def test_a_small_mlp_learns_a_nonlinear_function():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(256, 2)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) * np.cos(x[:, 1:])).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 64, generator=rng), nn.SiLU(),
                          nn.Linear(64, 64, generator=rng), nn.SiLU(),
                          nn.Linear(64, 1, generator=rng))
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    inputs, targets = autograd.Tensor(x), autograd.Tensor(y)
    first = None
    for _ in range(400):
        loss = nn.functional.mse_loss(model(inputs), targets)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.1
    assert loss.item() < 0.01, loss.item()
