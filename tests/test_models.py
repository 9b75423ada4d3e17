"""The UNet: the mnist-tiny spec's parameter count, shapes, conditioning, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

import autograd
from tinydiff.models import UNet, build_model, count_parameters, preset, timestep_embedding


def test_mnist_tiny_has_the_specified_parameter_count():
    assert count_parameters(build_model("mnist-tiny")) == 1_623_169


def test_mnist_small_is_larger():
    assert count_parameters(build_model("mnist-small")) > 2 * 1_623_169


def test_timestep_embedding_is_sines_then_cosines():
    t = np.array([0, 1, 500, 999])
    emb = timestep_embedding(t, 32)
    assert emb.shape == (4, 32) and emb.dtype == np.float32
    i = 5
    frequency = math.exp(-math.log(10000) * i / 15)
    assert emb[2, i] == pytest.approx(math.sin(500 * frequency), abs=1e-6)
    assert emb[2, 16 + i] == pytest.approx(math.cos(500 * frequency), abs=1e-6)
    np.testing.assert_array_equal(emb[0], [0.0] * 16 + [1.0] * 16)


def test_forward_shapes_and_dtype():
    model = build_model("micro")
    x = autograd.randn(2, 1, 28, 28, generator=np.random.default_rng(0))
    out = model(x, np.array([3, 700]))
    assert out.shape == (2, 1, 28, 28) and out.dtype == np.float32


def test_class_conditioning_uses_labels_and_a_null_label():
    model = build_model("micro", num_classes=10)
    x = autograd.randn(2, 1, 28, 28, generator=np.random.default_rng(0))
    t = np.array([10, 10])
    with autograd.no_grad():
        a = model(x, t, class_labels=np.array([1, 2])).numpy()
        b = model(x, t, class_labels=np.array([1, 7])).numpy()
        null = model(x, t).numpy()
        explicit_null = model(x, t, class_labels=np.array([10, 10])).numpy()
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[1], b[1])
    np.testing.assert_array_equal(null, explicit_null)


def test_bad_inputs_get_clear_errors():
    model = build_model("micro")
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(autograd.zeros(2, 3, 28, 28), np.array([0, 1]))
    with pytest.raises(ValueError, match="t of shape"):
        model(autograd.zeros(2, 1, 28, 28), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="divisible"):
        model(autograd.zeros(2, 1, 27, 27), np.array([0, 1]))
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("mnist-huge")


def test_gradient_of_the_whole_unet_matches_finite_differences():
    model = UNet(preset("micro", image_size=8)).double()
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    t = np.array([5, 900])
    assert autograd.gradcheck_directional(lambda inputs: model(inputs, t),
                                          [autograd.Tensor(x, requires_grad=True)],
                                          directions=3)
    # and with respect to every parameter at once, along a random direction
    params = list(model.parameters())
    model.zero_grad()  # the check above accumulated parameter gradients
    out = (model(autograd.Tensor(x), t) * autograd.Tensor(np.ones((2, 1, 8, 8)))).sum()
    out.backward()
    rng = np.random.default_rng(1)
    directions = [rng.standard_normal(p.shape) for p in params]
    predicted = sum(float(np.sum(p.grad.numpy() * u)) for p, u in zip(params, directions))
    originals = [p.numpy().copy() for p in params]

    def shifted(step):
        with autograd.no_grad():
            for p, original, u in zip(params, originals, directions):
                p.copy_(original + step * u)
            return float(model(autograd.Tensor(x), t).sum().item())

    eps = 1e-6
    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    assert predicted == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_fused_norm_silu_equals_the_two_layers_in_the_unet(monkeypatch):
    from autograd.nn import functional as F
    from tinydiff import models

    model = UNet(preset("micro", image_size=8)).double()
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    t = np.array([3, 900])
    fused = model(autograd.Tensor(x), t).numpy()
    monkeypatch.setattr(models, "norm_silu", lambda norm, h: F.silu(norm(h)))
    np.testing.assert_allclose(model(autograd.Tensor(x), t).numpy(), fused, rtol=1e-12,
                               atol=1e-12)
