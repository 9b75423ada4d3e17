"""A micrograd-style walk through autograd: from scalars to a trained MLP.

    python examples/autograd_tour.py

Each step prints what happens, so the output reads as a short lesson.
"""

from __future__ import annotations

import numpy as np

import autograd
from autograd import nn, optim


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 60 - len(title)))


def scalars() -> None:
    section("1. Scalars: every op remembers how it was made")
    a = autograd.tensor(2.0, requires_grad=True)
    b = autograd.tensor(-3.0, requires_grad=True)
    c = a * b + b**2  # c = ab + b^2
    print(f"a = {a.item()}, b = {b.item()}, c = a*b + b**2 = {c.item()}")
    print(f"c was made by {c.grad_fn!r}; its parents are {c.grad_fn.parents}")
    c.backward()
    print(f"dc/da = b = {a.grad.item()},  dc/db = a + 2b = {b.grad.item()}")


def arrays_and_broadcasting() -> None:
    section("2. Arrays: gradients are summed back over broadcast dims")
    x = autograd.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    bias = autograd.Tensor(np.ones(3), requires_grad=True)
    y = ((x + bias) ** 2).mean()
    y.backward()
    print("x =\n", x.numpy())
    print("d mean((x + bias)^2) / dx =\n", x.grad.numpy())
    print("the bias was broadcast over 2 rows, so its gradient sums them:", bias.grad.numpy())


def checking_gradients() -> None:
    section("3. Trust, but verify: gradcheck against finite differences")
    x = autograd.Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    ok = autograd.gradcheck(lambda t: t.softmax(dim=1).log().tanh(), [x])
    print("softmax -> log -> tanh passes gradcheck:", ok)


def training_an_mlp() -> None:
    section("4. A small MLP learns y = sin(3x)")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (128, 1)).astype(np.float32)
    y = np.sin(3 * x)
    model = nn.Sequential(nn.Linear(1, 32, generator=rng), nn.Tanh(),
                          nn.Linear(32, 32, generator=rng), nn.Tanh(),
                          nn.Linear(32, 1, generator=rng))
    print(model)
    print("parameters:", sum(p.numel() for p in model.parameters()))
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    inputs, targets = autograd.Tensor(x), autograd.Tensor(y)
    for step in range(301):
        loss = nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step:3d}  loss {loss.item():.5f}")
    with autograd.no_grad():
        probe = autograd.tensor([[-0.5], [0.0], [0.5]])
        print("model(-0.5, 0, 0.5) =", model(probe).numpy().ravel().round(3),
              " sin(3x) =", np.sin(3 * probe.numpy()).ravel().round(3))


if __name__ == "__main__":
    scalars()
    arrays_and_broadcasting()
    checking_gradients()
    training_an_mlp()
