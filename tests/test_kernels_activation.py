"""The compiled sigmoid/SiLU ufuncs against their NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from autograd.kernels import activation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_kernels_match_references(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 3, 5, 6)) * 6).astype(dtype)
    x.flat[:4] = [-1000.0, 1000.0, 0.0, -90.0]  # overflow of exp(-x) must give the limit
    grad = rng.standard_normal(x.shape).astype(dtype)
    tolerance = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14,
                                                                             atol=1e-300)
    pairs = [
        (activation.sigmoid(x), activation.sigmoid_reference(x)),
        (activation.silu(x), activation.silu_reference(x)),
        (activation.silu_backward(x, grad), activation.silu_backward_reference(x, grad)),
    ]
    for got, expected in pairs:
        assert got.dtype == dtype and np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected, **tolerance)


def test_activation_kernels_keep_a_channels_last_layout():
    x = np.zeros((2, 5, 5, 3), np.float32).transpose(0, 3, 1, 2)
    assert activation.silu(x).transpose(0, 2, 3, 1).flags.c_contiguous


def test_reference_switch(monkeypatch):
    x = np.linspace(-5, 5, 11)
    monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", "1")
    np.testing.assert_array_equal(activation.silu(x), activation.silu_reference(x))
