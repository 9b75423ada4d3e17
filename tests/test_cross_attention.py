"""CrossAttention2d: values against the attention written out in NumPy, float64 gradient
checks over random small shapes (one context token and one pixel included), and errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from module_testing import check_module
from op_testing import arrays

import autograd
from autograd import nn


def cross_attention_definition(block, x, context, heads, groups):
    """GroupNorm, 1x1-conv queries, linear keys/values, per-head softmax attention, 1x1-conv
    output and the residual, in NumPy."""
    n, c, h, w = x.shape
    grouped = x.reshape(n, groups, -1)
    normed = ((grouped - grouped.mean(-1, keepdims=True))
              / np.sqrt(grouped.var(-1, keepdims=True) + 1e-5)).reshape(n, c, h * w)
    normed = normed * block.norm.weight.numpy()[:, None] + block.norm.bias.numpy()[:, None]
    q = np.einsum("oc,nct->nto", block.q.weight.numpy()[:, :, 0, 0], normed) \
        + block.q.bias.numpy()
    kv = context @ block.kv.weight.numpy().T + block.kv.bias.numpy()  # (n, L, 2c)
    k, v = kv[..., :c], kv[..., c:]

    def heads_first(a):  # (n, tokens, c) -> (n, heads, tokens, c / heads)
        return a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(0, 2, 1, 3)

    q, k, v = heads_first(q), heads_first(k), heads_first(v)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(c // heads)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 1, 3, 2).reshape(n, c, h * w)  # heads back to c
    out = np.einsum("oc,nct->not", block.proj.weight.numpy()[:, :, 0, 0], attended) \
        + block.proj.bias.numpy()[:, None]
    return x + out.reshape(x.shape)


@given(data=st.data(), heads=st.sampled_from([1, 2]), batch=st.integers(1, 2),
       height=st.integers(1, 3), width=st.integers(1, 3), length=st.integers(1, 3),
       context_dim=st.integers(1, 5))
def test_cross_attention_matches_definition_and_gradcheck(data, heads, batch, height, width,
                                                           length, context_dim):
    block = nn.CrossAttention2d(4, context_dim, num_heads=heads, norm_groups=2,
                                generator=np.random.default_rng(3)).double()
    block.norm.weight.data = data.draw(arrays((4,))).copy()
    block.norm.bias.data = data.draw(arrays((4,))).copy()
    x = data.draw(arrays((batch, 4, height, width)))
    context = data.draw(arrays((batch, length, context_dim)))
    out = block(autograd.Tensor(x), autograd.Tensor(context))
    assert out.shape == x.shape and out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), cross_attention_definition(block, x, context,
                                                                       heads, 2),
                               rtol=1e-9, atol=1e-10)
    # float64 finite differences w.r.t. x, the context and every parameter
    check_module(block, x, context, atol=1e-5, rtol=1e-3)


def test_a_single_context_token_gives_every_position_its_value():
    """With L = 1 the softmax weight is 1: each position gets proj(v) whatever its query."""
    block = nn.CrossAttention2d(8, 3, num_heads=2, norm_groups=4,
                                generator=np.random.default_rng(0)).double()
    rng = np.random.default_rng(1)
    x, context = rng.standard_normal((2, 8, 3, 3)), rng.standard_normal((2, 1, 3))
    out = block(autograd.Tensor(x), autograd.Tensor(context)).numpy()
    v = context[:, 0] @ block.kv.weight.numpy()[8:].T + block.kv.bias.numpy()[8:]  # (2, 8)
    delta = v @ block.proj.weight.numpy()[:, :, 0, 0].T + block.proj.bias.numpy()
    np.testing.assert_allclose(out - x, np.broadcast_to(delta[:, :, None, None], x.shape),
                               rtol=1e-10, atol=1e-12)


def test_the_output_depends_on_the_context_and_the_context_gets_gradients():
    block = nn.CrossAttention2d(8, 6, norm_groups=4)
    rng = np.random.default_rng(2)
    x = autograd.Tensor(rng.standard_normal((2, 8, 4, 4)).astype(np.float32))
    context = autograd.Tensor(rng.standard_normal((2, 3, 6)).astype(np.float32),
                              requires_grad=True)
    out = block(x, context)
    assert out.dtype == np.float32
    other = block(x, autograd.Tensor(rng.standard_normal((2, 3, 6)).astype(np.float32)))
    assert not np.allclose(out.numpy(), other.numpy())
    out.sum().backward()
    assert context.grad.shape == (2, 3, 6) and np.abs(context.grad.numpy()).sum() > 0


def test_parameters_and_init():
    block = nn.CrossAttention2d(16, 32, num_heads=2)
    assert {name: p.shape for name, p in block.named_parameters()} == {
        "norm.weight": (16,), "norm.bias": (16,), "q.weight": (16, 16, 1, 1), "q.bias": (16,),
        "kv.weight": (32, 32), "kv.bias": (32,), "proj.weight": (16, 16, 1, 1),
        "proj.bias": (16,)}
    assert np.abs(block.kv.weight.numpy()).max() <= 1 / np.sqrt(32)  # PyTorch's Linear init
    assert "context_dim=32" in repr(block)


def test_clear_errors():
    block = nn.CrossAttention2d(8, 6, norm_groups=4)
    x = autograd.zeros(2, 8, 4, 4)
    with pytest.raises(ValueError, match=r"expects input \(N, 8, H, W\)"):
        block(autograd.zeros(2, 4, 4, 4), autograd.zeros(2, 3, 6))
    with pytest.raises(ValueError, match=r"expects input"):
        block(autograd.zeros(8, 4, 4), autograd.zeros(2, 3, 6))
    with pytest.raises(ValueError, match=r"context \(N=2, L >= 1, 6\), got \(2, 3, 5\)"):
        block(x, autograd.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"context \(N=2.*got \(3, 3, 6\)"):
        block(x, autograd.zeros(3, 3, 6))
    with pytest.raises(ValueError, match=r"got \(2, 6\)"):
        block(x, autograd.zeros(2, 6))
    with pytest.raises(ValueError, match=r"got \(2, 0, 6\)"):
        block(x, autograd.zeros(2, 0, 6))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        nn.CrossAttention2d(6, 4, num_heads=4)


# ---- the UNet's cross-attention conditioning ----------------------------------------------


def context_unet(**overrides):
    from tinydiff.models import UNet, preset

    settings = dict(image_size=4, channel_mult=(1, 2), attention_levels=(1,), num_classes=3,
                    context_dim=4, context_tokens=2)
    settings.update(overrides)
    return UNet(preset("micro", **settings))


def test_latent_preset_runs_with_cross_attention_everywhere_there_is_attention():
    from tinydiff.models import build_model

    model = build_model("latent-tiny")
    crosses = [name for name, m in model.named_modules() if isinstance(m, nn.CrossAttention2d)]
    selfs = [name for name, m in model.named_modules() if isinstance(m, nn.SelfAttention2d)]
    assert len(crosses) == len(selfs) == 2 + 3 + 1  # level 1 down, level 1 up, mid
    names = dict(model.named_parameters())
    assert names["context_embedding.weight"].shape == (11, 4 * 32)
    assert not any(name.startswith("class_embedding") for name in names)
    x = autograd.randn(2, 4, 8, 8, generator=np.random.default_rng(0))
    with autograd.no_grad():
        out = model(x, np.array([3, 900]), class_labels=np.array([1, 10]))
    assert out.shape == (2, 4, 8, 8) and out.dtype == np.float32


def test_labels_condition_only_through_the_context_and_the_null_label_works():
    model = context_unet()
    x = autograd.randn(2, 1, 4, 4, generator=np.random.default_rng(0))
    t = np.array([10, 10])
    with autograd.no_grad():
        a = model(x, t, class_labels=np.array([0, 1])).numpy()
        b = model(x, t, class_labels=np.array([0, 2])).numpy()
        null = model(x, t).numpy()
        explicit_null = model(x, t, class_labels=np.array([3, 3])).numpy()
        np.testing.assert_array_equal(model.embed(t, np.array([0, 1])).numpy(),
                                      model.embed(t).numpy())  # not in the time embedding
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[1], b[1])
    np.testing.assert_array_equal(null, explicit_null)
    assert model.context(t, np.array([0, 1])).shape == (2, 2, 4)


def test_gradients_reach_the_label_sequence_of_the_labels_used():
    model = context_unet()
    x = autograd.randn(3, 1, 4, 4, generator=np.random.default_rng(1))
    model(x, np.array([1, 500, 999]), class_labels=np.array([0, 3, 0])).sum().backward()
    grad = model.context_embedding.weight.grad.numpy()
    assert np.all(np.abs(grad[[0, 3]]).sum(axis=1) > 0) and np.all(grad[[1, 2]] == 0)
    assert all(p.grad is not None for p in model.parameters())


def test_gradient_of_the_conditioned_unet_matches_finite_differences():
    from module_testing import functional_call
    from op_testing import check_op

    model = context_unet().double()
    t, labels = np.array([5, 700]), np.array([2, 3])
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    weight = model.context_embedding.weight.numpy().copy()

    def runner(owner):
        def run(images, table):
            return functional_call(owner, {"context_embedding.weight": table}, images, t,
                                   labels)

        return run

    check_op(runner(model), x, weight, directional=True,
             device_fn=lambda device: runner(copy.deepcopy(model).to(device)))


def test_cross_attention_config_errors():
    from tinydiff.models import UNetConfig, build_model

    with pytest.raises(ValueError, match="needs num_classes"):
        UNetConfig(context_dim=8)
    with pytest.raises(ValueError, match="context_tokens=0"):
        UNetConfig(num_classes=10, context_dim=8, context_tokens=0)
    with pytest.raises(ValueError, match="no class conditioning"):
        build_model("micro")(autograd.zeros(1, 1, 28, 28), np.array([0]),
                             class_labels=np.array([1]))
    config = build_model("latent-tiny").config
    assert UNetConfig.from_dict(config.to_dict()) == config
