"""Matrix product with NumPy's (and PyTorch's) batch broadcasting."""

from __future__ import annotations

import numpy as np

from autograd.function import Function
from autograd.kernels import registry
from autograd.ops.elementwise import as_tensors
from autograd.ops.shape import reshape, unsqueeze
from autograd.tensor import Tensor


def _product(a, b):
    """a @ b, on autograd's threads where that pays (kernels/matmul.py)."""
    fast = registry.lookup("matmul", a, b)
    return a @ b if fast is None else fast(a, b)


class MatMul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return _product(a, b)

    def backward(self, grad):  # d(ab) = da b + a db, with batch dims summed by the engine
        a, b = self.saved
        return (
            _product(grad, b.swapaxes(-1, -2)) if self.needs_input_grad[0] else None,
            _product(a.swapaxes(-1, -2), grad) if self.needs_input_grad[1] else None,
        )


def matmul(a, b) -> Tensor:
    """a @ b. 1-D operands are treated as a row (left) or a column (right) vector, and
    that dimension is removed from the result, as in NumPy."""
    a, b = as_tensors(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul needs operands with at least one dim; use * for scalars")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"matmul shapes {a.shape} and {b.shape} do not match: {a.shape[-1]} columns vs "
            f"{b.shape[-2 if b.ndim > 1 else 0]} rows"
        )
    row_vector, column_vector = a.ndim == 1, b.ndim == 1
    a = unsqueeze(a, 0) if row_vector else a
    b = unsqueeze(b, -1) if column_vector else b
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"matmul batch dims of {a.shape} and {b.shape} do not broadcast"
        ) from None
    out = MatMul.apply(a, b)
    if row_vector or column_vector:
        keep = out.shape[:-2] + out.shape[-2:][row_vector: 2 - column_vector]
        out = reshape(out, keep)
    return out
