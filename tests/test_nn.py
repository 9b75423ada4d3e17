"""nn.Module bookkeeping, Linear, containers and state dicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

import autograd
from autograd import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.scale = nn.Parameter(np.ones(4, np.float32))
        self.register_buffer("count", autograd.zeros(1))
        self.register_buffer("scratch", autograd.zeros(2), persistent=False)
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2)])

    def forward(self, x):
        h = self.fc(x) * self.scale
        for layer in self.layers:
            h = layer(h).relu()
        return h


def test_registration_and_traversal():
    block = Block()
    names = [name for name, _ in block.named_parameters()]
    assert names == ["scale", "fc.weight", "fc.bias", "layers.0.weight", "layers.0.bias",
                     "layers.1.weight", "layers.1.bias"]
    assert [name for name, _ in block.named_buffers()] == ["count", "scratch"]
    assert len(list(block.modules())) == 5
    assert [name for name, _ in block.named_children()] == ["fc", "layers"]
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(block)


def test_state_dict_holds_parameters_and_persistent_buffers():
    block = Block()
    state = block.state_dict()
    assert "count" in state and "scratch" not in state
    assert set(state) == {"scale", "count", "fc.weight", "fc.bias", "layers.0.weight",
                          "layers.0.bias", "layers.1.weight", "layers.1.bias"}
    other = Block()
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())


def test_load_state_dict_names_missing_unexpected_and_misshaped_keys():
    block = Block()
    state = block.state_dict()
    del state["fc.bias"]
    state["extra"] = autograd.zeros(1)
    state["fc.weight"] = autograd.zeros(5, 3)
    with pytest.raises(RuntimeError) as error:
        block.load_state_dict(state)
    message = str(error.value)
    assert "fc.bias" in message and "extra" in message and "(5, 3)" in message
    state["fc.weight"] = block.fc.weight.detach()
    result = block.load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc.bias"] and result.unexpected_keys == ["extra"]


def test_train_eval_zero_grad_and_dtype():
    block = Block()
    assert block.training and block.layers[0].training
    block.eval()
    assert not block.training and not block.layers[1].training
    block.train()
    out = block(autograd.ones(2, 3)).sum()
    out.backward()
    assert all(p.grad is not None for p in block.parameters())
    block.zero_grad()
    assert all(p.grad is None for p in block.parameters())
    weight = block.fc.weight
    block.double()
    assert block.fc.weight is weight and weight.dtype == np.float64
    assert block.count.dtype == np.float64
    assert block(autograd.ones(2, 3, dtype=np.float64)).dtype == np.float64


def test_linear_uses_pytorch_default_init_bounds():
    layer = nn.Linear(50, 20)
    bound = 1 / math.sqrt(50)
    for tensor in (layer.weight, layer.bias):
        values = tensor.numpy()
        assert values.min() >= -bound and values.max() <= bound
        assert values.max() - values.min() > bound  # spread over the interval
    assert layer.weight.shape == (20, 50) and layer.weight.dtype == np.float32
    assert nn.Linear(3, 2, bias=False).bias is None


def test_linear_init_is_reproducible_from_a_generator():
    a = nn.Linear(4, 3, generator=np.random.default_rng(1))
    b = nn.Linear(4, 3, generator=np.random.default_rng(1))
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())


def test_sequential_and_activation_modules():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1), nn.Sigmoid())
    out = model(autograd.ones(5, 2))
    assert out.shape == (5, 1) and len(model) == 4 and isinstance(model[1], nn.ReLU)
    assert np.all((out.numpy() > 0) & (out.numpy() < 1))


def test_assigning_a_non_parameter_over_a_parameter_is_an_error():
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="weight"):
        layer.weight = np.zeros((2, 2))


def test_clip_grad_norm():
    a = nn.Parameter(np.array([3.0, 0.0]))
    b = nn.Parameter(np.array([0.0, 4.0]))
    a.grad, b.grad = autograd.Tensor(np.array([3.0, 0.0])), autograd.Tensor(np.array([0.0, 4.0]))
    norm = nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert norm.item() == pytest.approx(5.0)
    joint = np.sqrt(np.sum(a.grad.numpy() ** 2) + np.sum(b.grad.numpy() ** 2))
    assert joint == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(a.grad.numpy() / b.grad.numpy()[1], [0.75, 0.0])
    small = nn.Parameter(np.array([0.1]))
    small.grad = autograd.Tensor(np.array([0.1]))
    nn.utils.clip_grad_norm_([small], max_norm=1.0)
    assert small.grad.item() == 0.1
