"""Op conventions beyond gradients: PyTorch's names and defaults, NumPy's spellings,
non-differentiable results, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import autograd

X = np.arange(12.0).reshape(3, 4) - 5.0


def test_numpy_spellings_match_pytorch_names():
    x = autograd.Tensor(X)
    np.testing.assert_array_equal(x.sum(axis=1, keepdims=True).numpy(),
                                  x.sum(dim=1, keepdim=True).numpy())
    np.testing.assert_array_equal(x.mean(axis=0).numpy(), X.mean(axis=0))
    np.testing.assert_array_equal(autograd.concatenate([x, x], axis=0).numpy(),
                                  autograd.cat([x, x], dim=0).numpy())
    np.testing.assert_array_equal(x.clip(-1, 1).numpy(), x.clamp(-1, 1).numpy())
    np.testing.assert_allclose(x.var(ddof=0).item(), X.var())


def test_var_uses_bessels_correction_by_default():
    x = autograd.Tensor(X)
    np.testing.assert_allclose(x.var(dim=1).numpy(), X.var(axis=1, ddof=1))
    np.testing.assert_allclose(x.var(dim=1, correction=0).numpy(), X.var(axis=1))
    np.testing.assert_allclose(x.std().item(), X.std(ddof=1))


def test_comparisons_and_arg_reductions_are_outside_the_graph():
    x = autograd.Tensor(X, requires_grad=True)
    for result in (x > 0, x <= 1, x == 2, x != 2, x < x * 2, x >= 0.5):
        assert result.dtype == np.bool_ and not result.requires_grad
    np.testing.assert_array_equal((x > 0).numpy(), X > 0)
    assert x.argmax().item() == 11 and x.argmin(dim=1).tolist() == [0, 0, 0]
    assert x.argmax(dim=0, keepdim=True).shape == (1, 4)
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.numpy(), X.max(axis=1))
    assert indices.dtype == np.int64 and indices.tolist() == [3, 3, 3]
    assert x.max().item() == X.max() and autograd.max(x, autograd.Tensor(-X)).shape == (3, 4)


def test_shape_ops_follow_pytorch():
    x = autograd.Tensor(np.zeros((2, 1, 3)))
    assert x.squeeze().shape == (2, 3) and x.squeeze(1).shape == (2, 3)
    assert x.unsqueeze(-1).shape == (2, 1, 3, 1) and x.flatten().shape == (6,)
    assert x.flatten(1).shape == (2, 3) and x.permute(2, 0, 1).shape == (3, 2, 1)
    assert x.transpose(0, 2).shape == (3, 1, 2) and x.expand(2, 4, 3).shape == (2, 4, 3)
    assert [p.shape for p in autograd.Tensor(np.zeros(7)).split(3)] == [(3,), (3,), (1,)]
    assert [p.shape for p in autograd.Tensor(np.zeros(7)).chunk(3)] == [(3,), (3,), (1,)]
    assert autograd.stack([x, x], dim=1).shape == (2, 2, 1, 3)
    assert autograd.pad(x, (1, 2)).shape == (2, 1, 6)
    assert autograd.pad(x, (1, 1, 0, 2)).shape == (2, 3, 5)


def test_where_needs_a_boolean_condition():
    with pytest.raises(TypeError, match="boolean"):
        autograd.where(np.array([1, 0]), autograd.zeros(2), autograd.ones(2))


def test_shape_errors_are_clear():
    x = autograd.zeros(2, 3)
    with pytest.raises(ValueError, match="cannot reshape"):
        x.reshape(4, 2)
    with pytest.raises(IndexError, match="out of range"):
        x.sum(dim=2)
    with pytest.raises(ValueError, match="differ outside dim"):
        autograd.cat([x, autograd.zeros(3, 3)], dim=1)
    with pytest.raises(ValueError, match="permutation"):
        x.permute(0, 0)
