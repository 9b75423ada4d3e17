"""Outputs and gradients against PyTorch 2.13 in float64 (tests/reference/torch_ops.npz),
for every reference case that is not a convolution, pooling or interpolation, a norm
(tests/test_norm.py), log_softmax (tests/test_softmax.py) or attention (test_attention.py).

For case NAME the file holds the inputs NAME/in0.., the output NAME/out, an upstream
gradient NAME/upstream and NAME/gradI = d sum(out * upstream) / d inI."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT
from test_attention import TORCH_CASES as ATTENTION_CASES
from test_norm import TORCH_CASES as NORM_CASES

import autograd
from autograd import optim
from autograd.nn import functional as F

REFERENCE = np.load(REPO_ROOT / "tests" / "reference" / "torch_ops.npz")
RTOL, ATOL = 1e-10, 1e-12


def _case(name: str):
    return {key.split("/", 1)[1]: REFERENCE[key] for key in REFERENCE.files
            if key.startswith(name + "/")}


CASES = {
    "gelu_exact": lambda ref, x: F.gelu(x),
    "gelu_tanh": lambda ref, x: F.gelu(x, approximate="tanh"),
    "silu": lambda ref, x: F.silu(x),
    "var_default": lambda ref, x: x.var(dim=1),
    "var_pop_keepdim": lambda ref, x: x.var(dim=(0, 2), correction=0, keepdim=True),
    "cross_entropy_ls": lambda ref, x: F.cross_entropy(x, ref["labels"], label_smoothing=0.1),
    "mse_loss": lambda ref, a, b: F.mse_loss(a, b),
    "logsumexp": lambda ref, x: x.logsumexp(dim=-1),
    "getitem_repeat": lambda ref, x: x[ref["index"]],
    "matmul_bcast": lambda ref, a, b: a @ b,
}


def test_every_non_convolution_case_is_covered():
    convolution_family = ("conv", "pool", "interpolate")
    names = {key.split("/")[0] for key in REFERENCE.files}
    expected = {name for name in names if not any(part in name for part in convolution_family)}
    assert expected == (set(CASES) | set(NORM_CASES) | set(ATTENTION_CASES)
                        | {"log_softmax", "adamw"})


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_and_gradients_match_pytorch(name):
    ref = _case(name)
    count = sum(1 for key in ref if key[:2] == "in" and key[2:].isdigit())
    inputs = [autograd.Tensor(ref[f"in{i}"].copy(), requires_grad=True) for i in range(count)]
    out = CASES[name](ref, *inputs)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), ref["out"], rtol=RTOL, atol=ATOL)
    out.backward(ref["upstream"])
    for i, x in enumerate(inputs):
        np.testing.assert_allclose(x.grad.numpy(), ref[f"grad{i}"], rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of input {i}")


def test_adamw_steps_match_pytorch():
    ref = _case("adamw")
    p = autograd.nn.Parameter(ref["p0"].copy())
    optimizer = optim.AdamW([p], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for grad, expected in zip(ref["grads"], ref["params_after_each_step"]):
        p.grad = autograd.Tensor(grad.copy())
        optimizer.step()
        np.testing.assert_allclose(p.numpy(), expected, rtol=RTOL, atol=ATOL)
