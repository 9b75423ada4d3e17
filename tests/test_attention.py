"""scaled_dot_product_attention, MultiheadAttention and SelfAttention2d: values against the
definition written in NumPy and PyTorch's values, float64 gradient checks (with and without
bool/float masks, each with check_op's simulated-CuPy leg), errors for bad input, and the
device legs (cuda-sim, cuda). Its softmax kernels: tests/test_softmax.py."""

from __future__ import annotations

import numpy as np
import pytest
from device_testing import assert_same_as_cpu
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from module_testing import check_module
from op_testing import arrays, check_op, check_torch_case, torch_case

import autograd
from autograd import nn
from autograd.nn import functional as F


def attention_definition(q, k, v, allowed=None, additive=None, scale=None):
    """softmax(q k^T scale + mask) v in NumPy; rows that may attend to nothing give 0."""
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if additive is not None:
        scores = scores + additive
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    peak = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(peak), peak, 0))
    total = weights.sum(axis=-1, keepdims=True)
    weights = np.where(total > 0, weights / np.where(total > 0, total, 1), 0)
    return weights @ v


@st.composite
def attention_shapes(draw):
    """(batch dims of q, of k and v), L, S, E, Ev; the batch dims broadcast."""
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    sizes = [draw(st.integers(1, 4)) for _ in range(4)]
    return batch.input_shapes, *sizes


@given(data=st.data(), case=attention_shapes(),
       mask_kind=st.sampled_from(["none", "bool", "float", "causal"]))
def test_sdpa_matches_definition_and_gradcheck(data, case, mask_kind):
    (q_batch, kv_batch), length, source, features, value_features = case
    q = data.draw(arrays(q_batch + (length, features)))
    k = data.draw(arrays(kv_batch + (source, features)))
    v = data.draw(arrays(kv_batch + (source, value_features)))
    # masks broadcast to the scores (..., L, S); (1, L, S) needs a batch dim to stand for
    mask_shapes = [(length, source), (length, 1)]
    if len(np.broadcast_shapes(q_batch, kv_batch)) >= 1:
        mask_shapes.append((1, length, source))
    mask_shape = data.draw(st.sampled_from(mask_shapes))
    allowed = additive = None
    if mask_kind == "bool":
        allowed = data.draw(hnp.arrays(np.bool_, mask_shape))
    elif mask_kind == "float":
        additive = data.draw(arrays(mask_shape))
    elif mask_kind == "causal":
        allowed = np.tril(np.ones((length, source), bool))
    expected = attention_definition(q, k, v, allowed, additive)
    attn_mask = allowed if mask_kind == "bool" else None

    def sdpa(*tensors):
        mask = tensors[3] if len(tensors) == 4 else attn_mask
        return F.scaled_dot_product_attention(*tensors[:3], attn_mask=mask,
                                              is_causal=mask_kind == "causal")

    inputs = (q, k, v) if additive is None else (q, k, v, additive)
    out = sdpa(*(autograd.Tensor(a) for a in inputs))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    check_op(sdpa, *inputs)


def test_fully_masked_rows_give_zeros_and_zero_gradients():
    rng = np.random.default_rng(0)
    q, k, v = (autograd.Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
               for _ in range(3))
    allowed = np.ones((3, 3), bool)
    allowed[1] = False  # query 1 may attend to nothing
    for mask in (allowed, np.where(allowed, 0.0, -np.inf)):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        np.testing.assert_array_equal(out.numpy()[:, 1], 0.0)
        assert np.all(np.isfinite(out.numpy()))
        out.sum().backward()
        np.testing.assert_array_equal(q.grad.numpy()[:, 1], 0.0)
        assert all(np.all(np.isfinite(t.grad.numpy())) for t in (q, k, v))
        q.grad = k.grad = v.grad = None


@given(data=st.data(), length=st.integers(1, 4), source=st.integers(1, 4),
       scale=st.floats(0.1, 2.0), p=st.sampled_from([0.2, 0.5]))
def test_sdpa_scale_and_dropout(data, length, source, scale, p):
    q = data.draw(arrays((2, length, 3)))
    k, v = data.draw(arrays((2, source, 3))), data.draw(arrays((2, source, 2)))

    def with_dropout(*tensors):  # the same dropout mask on every call
        return F.scaled_dot_product_attention(*tensors, dropout_p=p, scale=scale,
                                              generator=np.random.default_rng(7))

    keep = np.random.default_rng(7).random((2, length, source), dtype=np.float32) >= p
    scores = q @ np.swapaxes(k, -1, -2) * scale
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = (weights * keep / (1 - p)) @ v
    out = with_dropout(*(autograd.Tensor(a) for a in (q, k, v)))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    check_op(with_dropout, q, k, v)


def test_sdpa_keeps_float32():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 49, 16)) for _ in range(3))
    out = F.scaled_dot_product_attention(*(autograd.Tensor(a.astype(np.float32))
                                           for a in (q, k, v)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), attention_definition(q, k, v), rtol=1e-4,
                               atol=1e-5)


def test_sdpa_errors():
    q, k, v = autograd.zeros(2, 3, 4), autograd.zeros(2, 5, 4), autograd.zeros(2, 5, 6)
    with pytest.raises(ValueError, match="features per token"):
        F.scaled_dot_product_attention(q, autograd.zeros(2, 5, 3), v)
    with pytest.raises(ValueError, match="k has 5 tokens, v has 4"):
        F.scaled_dot_product_attention(q, k, autograd.zeros(2, 4, 6))
    with pytest.raises(ValueError, match="do not broadcast"):
        F.scaled_dot_product_attention(autograd.zeros(3, 3, 4), k, v)
    with pytest.raises(ValueError, match="at least 2 dims"):
        F.scaled_dot_product_attention(autograd.zeros(4), k, v)
    with pytest.raises(ValueError, match="does not broadcast to the scores"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="does not broadcast to the scores"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 3, 5), bool))
    with pytest.raises(TypeError, match="float32 and float64"):
        F.scaled_dot_product_attention(q, k, v.double())
    with pytest.raises(TypeError, match="attn_mask is float64"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=autograd.zeros(3, 5).double())
    with pytest.raises(TypeError, match="bool or float"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 5), np.int64))
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 5), bool),
                                       is_causal=True)


# ---- MultiheadAttention -------------------------------------------------------------------


def mha_definition(layer, query, key, value, mask=None):
    """PyTorch's multi-head attention written out in NumPy (batch_first)."""
    embed, heads = layer.embed_dim, layer.num_heads
    w, b = layer.in_proj_weight.numpy(), layer.in_proj_bias.numpy()
    parts = [x @ w[i * embed:(i + 1) * embed].T + b[i * embed:(i + 1) * embed]
             for i, x in enumerate((query, key, value))]
    q, k, v = (p.reshape(p.shape[0], p.shape[1], heads, -1).transpose(0, 2, 1, 3)
               for p in parts)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(query.shape)
    out = attended @ layer.out_proj.weight.numpy().T + layer.out_proj.bias.numpy()
    return out, weights.mean(axis=1)


def test_multihead_attention_layout_and_init():
    layer = nn.MultiheadAttention(8, 2)
    assert {name: p.shape for name, p in layer.named_parameters()} == {
        "in_proj_weight": (24, 8), "in_proj_bias": (24,), "out_proj.weight": (8, 8),
        "out_proj.bias": (8,)}
    np.testing.assert_array_equal(layer.in_proj_bias.numpy(), 0.0)
    np.testing.assert_array_equal(layer.out_proj.bias.numpy(), 0.0)
    bound = np.sqrt(6 / (24 + 8))
    assert 0.5 * bound < np.abs(layer.in_proj_weight.numpy()).max() <= bound


@given(data=st.data(), heads=st.sampled_from([1, 2]), length=st.integers(1, 3),
       source=st.integers(1, 3))
def test_multihead_attention_matches_definition_with_masks(data, heads, length, source):
    layer = nn.MultiheadAttention(4, heads, batch_first=True,
                                  generator=np.random.default_rng(0)).double()
    layer.in_proj_bias.data = data.draw(arrays((12,))).copy()
    layer.out_proj.bias.data = data.draw(arrays((4,))).copy()
    query = data.draw(arrays((2, length, 4)))
    key, value = data.draw(arrays((2, source, 4))), data.draw(arrays((2, source, 4)))
    blocked = data.draw(hnp.arrays(np.bool_, (length, source)))
    padding = data.draw(hnp.arrays(np.bool_, (2, source)))
    blocked[:, 0] = padding[:, 0] = False  # every query keeps a key
    additive = np.where(blocked, -np.inf, 0) + np.where(padding, -np.inf, 0)[:, None, None]
    expected, expected_weights = mha_definition(layer, query, key, value, additive)
    tensors = [autograd.Tensor(a) for a in (query, key, value)]
    out, weights = layer(*tensors, key_padding_mask=padding, attn_mask=blocked)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-10, atol=1e-12)
    fast, none = layer(*tensors, key_padding_mask=padding, attn_mask=blocked,
                       need_weights=False)
    assert none is None
    np.testing.assert_allclose(fast.numpy(), expected, rtol=1e-10, atol=1e-12)
    check_module(layer, query, key, value, directional=True)


def test_multihead_attention_sequence_first_and_bad_shapes():
    layer = nn.MultiheadAttention(4, 2).double()  # sequence first, PyTorch's default
    x = np.random.default_rng(3).standard_normal((5, 2, 4))
    out, _ = layer(*(autograd.Tensor(x),) * 3)
    batch_first = nn.MultiheadAttention(4, 2, batch_first=True).double()
    batch_first.load_state_dict(layer.state_dict())
    expected, _ = batch_first(*(autograd.Tensor(x.transpose(1, 0, 2)),) * 3)
    np.testing.assert_allclose(out.numpy(), expected.numpy().transpose(1, 0, 2))
    with pytest.raises(ValueError, match="not divisible"):
        nn.MultiheadAttention(5, 2)
    with pytest.raises(ValueError, match="expects query"):
        layer(autograd.zeros(2, 3).double(), autograd.zeros(2, 3).double(),
              autograd.zeros(2, 3).double())


# ---- SelfAttention2d ----------------------------------------------------------------------


def self_attention_definition(block, x, heads):
    n, c, h, w = x.shape
    grouped = x.reshape(n, 8, -1)
    normed = ((grouped - grouped.mean(-1, keepdims=True))
              / np.sqrt(grouped.var(-1, keepdims=True) + 1e-5)).reshape(n, c, h * w)
    normed = normed * block.norm.weight.numpy()[:, None] + block.norm.bias.numpy()[:, None]
    qkv = np.einsum("oc,nct->not", block.qkv.weight.numpy()[:, :, 0, 0], normed) \
        + block.qkv.bias.numpy()[:, None]
    q, k, v = (part.reshape(n, heads, c // heads, h * w).transpose(0, 1, 3, 2)
               for part in np.split(qkv, 3, axis=1))
    attended = attention_definition(q, k, v).transpose(0, 1, 3, 2).reshape(n, c, h * w)
    out = np.einsum("oc,nct->not", block.proj.weight.numpy()[:, :, 0, 0], attended) \
        + block.proj.bias.numpy()[:, None]
    return x + out.reshape(x.shape)


def test_self_attention_2d_parameters_match_the_unet_block():
    block = nn.SelfAttention2d(64)
    assert {name: p.shape for name, p in block.named_parameters()} == {
        "norm.weight": (64,), "norm.bias": (64,), "qkv.weight": (192, 64, 1, 1),
        "qkv.bias": (192,), "proj.weight": (64, 64, 1, 1), "proj.bias": (64,)}
    assert sum(p.numel() for p in block.parameters()) == 128 + 192 * 65 + 64 * 65
    bound = 1 / np.sqrt(64)  # PyTorch's Conv2d init, fan_in = 64
    assert np.abs(block.qkv.weight.numpy()).max() <= bound
    with pytest.raises(ValueError, match="expects input"):
        block(autograd.zeros(1, 32, 7, 7))


@given(data=st.data(), heads=st.sampled_from([1, 2]), height=st.integers(1, 3),
       width=st.integers(1, 3))
def test_self_attention_2d_matches_definition_and_gradcheck(data, heads, height, width):
    block = nn.SelfAttention2d(16, num_heads=heads,
                               generator=np.random.default_rng(4)).double()
    block.norm.weight.data = data.draw(arrays((16,))).copy()
    x = data.draw(arrays((2, 16, height, width)))
    out = block(autograd.Tensor(x))
    np.testing.assert_allclose(out.numpy(), self_attention_definition(block, x, heads),
                               rtol=1e-9, atol=1e-10)
    check_module(block, x, directional=True)


# ---- PyTorch's values and the device legs ------------------------------------------------

TORCH_CASES = {
    "sdpa_bool_mask": lambda ref, q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=ref["mask"]),
    "sdpa_plain": lambda ref, q, k, v: F.scaled_dot_product_attention(q, k, v),
}


@pytest.mark.parametrize("reference_kernels", ["0", "1"], ids=["fast paths", "references"])
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_pytorch(name, reference_kernels, monkeypatch):
    monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", reference_kernels)
    ref = torch_case(name)
    check_torch_case(name, lambda *inputs: TORCH_CASES[name](ref, *inputs), rtol=1e-10,
                     atol=1e-12)


@pytest.mark.parametrize("case", ["plain", "causal", "bool-mask", "float-mask", "dropout",
                                  "empty-rows"])
def test_attention_on_the_device_matches_the_cpu(case, gpu_device):
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal(s) for s in [(2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 2)])
    sdpa = autograd.nn.functional.scaled_dot_product_attention
    mask = rng.standard_normal((4, 5)) > 0
    if case == "empty-rows":
        mask[1] = False  # a query that may attend to nothing: zeros, zero gradient
    inputs = (q, k, v)
    if case == "plain":
        fn = sdpa
    elif case == "causal":
        def fn(*t):
            return sdpa(*t, is_causal=True)
    elif case in ("bool-mask", "empty-rows"):
        def fn(*t):
            return sdpa(*t, attn_mask=mask)
    elif case == "float-mask":
        inputs = (q, k, v, rng.standard_normal((2, 1, 4, 5)))

        def fn(*t):
            return sdpa(*t[:3], attn_mask=t[3])
    else:
        def fn(*t):
            return sdpa(*t, dropout_p=0.3, generator=np.random.default_rng(9))
    outputs, grads = assert_same_as_cpu(fn, *inputs, device=gpu_device)
    if case == "empty-rows":
        assert np.all(outputs[0][:, :, 1] == 0) and np.all(grads[0][:, :, 1] == 0)


def test_attention_mask_on_another_device_is_an_error(gpu_device):
    q = autograd.ones(1, 2, 3, device=gpu_device)
    sdpa = autograd.nn.functional.scaled_dot_product_attention
    with pytest.raises(RuntimeError, match="attn_mask is on cpu but q is on cuda:0"):
        sdpa(q, q, q, attn_mask=autograd.Tensor(np.ones((2, 2), bool)))
    out = sdpa(q, q, q, attn_mask=np.ones((2, 2), bool))  # a NumPy constant moves
    assert out.device == gpu_device
