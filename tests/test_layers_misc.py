"""Dropout, Embedding, the activation modules, and the losses against PyTorch's values."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT
from hypothesis import given
from hypothesis import strategies as st
from module_testing import check_module
from op_testing import arrays, check_op, shapes

import autograd
from autograd import nn
from autograd.nn import functional as F

# ---- dropout ------------------------------------------------------------------------------


@given(data=st.data(), shape=shapes, p=st.sampled_from([0.1, 0.5, 0.9]),
       seed=st.integers(0, 1000))
def test_dropout_zeroes_and_rescales_with_the_generators_draws(data, shape, p, seed):
    x = data.draw(arrays(shape, away_from=0.0))
    out = F.dropout(autograd.Tensor(x), p, training=True,
                    generator=np.random.default_rng(seed))
    keep = np.random.default_rng(seed).random(shape, dtype=np.float32) >= p
    np.testing.assert_allclose(out.numpy(), np.where(keep, x / (1 - p), 0.0))
    check_op(lambda t: F.dropout(t, p, True, np.random.default_rng(seed)), x)


def test_dropout_statistics_modes_and_edge_probabilities():
    x = autograd.ones(200, 500)
    out = F.dropout(x, 0.3, generator=np.random.default_rng(0)).numpy()
    assert out.dtype == np.float32
    assert abs((out == 0).mean() - 0.3) < 0.01
    assert abs(out.mean() - 1.0) < 0.02  # inverted scaling keeps the mean
    assert F.dropout(x, 0.3, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), 0.0)
    layer = nn.Dropout(0.5, generator=np.random.default_rng(1))
    assert np.any(layer(x).numpy() == 0)
    assert layer.eval()(x) is x
    autograd.manual_seed(5)
    first = F.dropout(x, 0.5).numpy()
    autograd.manual_seed(5)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            F.dropout(x, bad)
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            nn.Dropout(bad)


# ---- embedding ----------------------------------------------------------------------------


@given(data=st.data(), rows=st.integers(1, 5), dim=st.integers(1, 4),
       index_shape=st.lists(st.integers(1, 4), min_size=1, max_size=2))
def test_embedding_gathers_rows_and_adds_up_repeated_gradients(data, rows, dim, index_shape):
    weight = data.draw(arrays((rows, dim)))
    count = int(np.prod(index_shape))
    indices = np.array(data.draw(st.lists(st.integers(0, rows - 1), min_size=count,
                                          max_size=count))).reshape(index_shape)
    w = autograd.Tensor(weight, requires_grad=True)
    out = F.embedding(autograd.Tensor(indices), w)
    np.testing.assert_array_equal(out.numpy(), weight[indices])
    upstream = data.draw(arrays(out.shape))
    out.backward(upstream)
    one_hot = np.eye(rows)[indices.reshape(-1)]  # (count, rows)
    np.testing.assert_allclose(w.grad.numpy(), one_hot.T @ upstream.reshape(count, dim))
    check_op(lambda t: F.embedding(indices, t), weight)


def test_embedding_module_init_padding_and_errors():
    layer = nn.Embedding(1000, 64, generator=np.random.default_rng(0))
    values = layer.weight.numpy()
    assert values.shape == (1000, 64) and values.dtype == np.float32
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01  # N(0, 1)
    padded = nn.Embedding(4, 3, padding_idx=-1).double()
    np.testing.assert_array_equal(padded.weight.numpy()[3], 0.0)
    indices = np.array([[3, 1], [1, 3]])
    out = padded(indices)
    np.testing.assert_array_equal(out.numpy(), padded.weight.numpy()[indices])
    out.sum().backward()
    np.testing.assert_array_equal(padded.weight.grad.numpy(), [[0] * 3, [2] * 3, [0] * 3,
                                                               [0] * 3])
    with pytest.raises(TypeError, match="integers"):
        padded(np.array([0.5]))
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        padded(np.array([4]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(4, 3, padding_idx=4)


# ---- activation modules -------------------------------------------------------------------

ACTIVATIONS = {
    "ReLU": (nn.ReLU(), F.relu),
    "SiLU": (nn.SiLU(), F.silu),
    "GELU": (nn.GELU(), F.gelu),
    "GELU_tanh": (nn.GELU("tanh"), lambda t: F.gelu(t, approximate="tanh")),
    "Sigmoid": (nn.Sigmoid(), F.sigmoid),
    "Tanh": (nn.Tanh(), F.tanh),
    "Softmax": (nn.Softmax(dim=1), lambda t: F.softmax(t, 1)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(data=st.data())
def test_activation_modules_match_functional_and_gradcheck(name, data):
    module, function = ACTIVATIONS[name]
    x = data.draw(arrays((3, 4), away_from=0.0, margin=1e-2))
    np.testing.assert_array_equal(module(autograd.Tensor(x)).numpy(),
                                  function(autograd.Tensor(x)).numpy())
    check_module(module, x)


def test_activation_modules_in_a_network_train_with_dropout_and_norm():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.GELU(), nn.Dropout(0.2),
                          nn.Linear(8, 2)).double()
    x = np.random.default_rng(0).standard_normal((5, 4))
    model.eval()
    check_module(model, x)


# ---- losses against PyTorch ---------------------------------------------------------------

REFERENCE = np.load(REPO_ROOT / "tests" / "reference" / "torch_ops.npz")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_pytorch_for_every_reduction(reduction):
    # The reference holds PyTorch's mean losses and the gradients of upstream * loss; sum
    # and none follow from them.
    a, b = REFERENCE["mse_loss/in0"], REFERENCE["mse_loss/in1"]
    count = a.size
    scale = {"mean": 1.0, "sum": count, "none": count}[reduction]
    x = autograd.Tensor(a, requires_grad=True)
    loss = F.mse_loss(x, autograd.Tensor(b), reduction=reduction)
    total = loss.sum() if reduction == "none" else loss
    np.testing.assert_allclose(total.item(), REFERENCE["mse_loss/out"] * scale, rtol=1e-12)
    total.backward(REFERENCE["mse_loss/upstream"])
    np.testing.assert_allclose(x.grad.numpy(), REFERENCE["mse_loss/grad0"] * scale,
                               rtol=1e-10, atol=1e-12)

    logits, labels = REFERENCE["cross_entropy_ls/in0"], REFERENCE["cross_entropy_ls/labels"]
    scale = {"mean": 1.0, "sum": len(labels), "none": len(labels)}[reduction]
    x = autograd.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, labels, label_smoothing=0.1, reduction=reduction)
    total = loss.sum() if reduction == "none" else loss
    np.testing.assert_allclose(total.item(), REFERENCE["cross_entropy_ls/out"] * scale,
                               rtol=1e-12)
    total.backward(REFERENCE["cross_entropy_ls/upstream"])
    np.testing.assert_allclose(x.grad.numpy(), REFERENCE["cross_entropy_ls/grad0"] * scale,
                               rtol=1e-10, atol=1e-12)
