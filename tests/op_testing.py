"""The gradient-check harness every op test uses (modelled on MyGrad's).

`arrays(shape)` draws bounded float64 arrays, sometimes non-contiguous; `shapes` and
`broadcastable_shapes` draw shapes with size-1 and broadcast dims; `check_op` runs
`autograd.gradcheck` (or the directional check for big inputs) and checks the invariants
every op must keep: inputs are not mutated, gradients do not alias each other or the inputs,
and the graph's saved arrays are released after backward.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd.engine import topological_order

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def broadcastable_shapes(num_shapes: int = 2, max_dims: int = 3):
    """Tuples of shapes that broadcast together (size-1 and missing dims included)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=0, max_dims=max_dims, min_side=1, max_side=4
    ).map(lambda result: result.input_shapes)


@st.composite
def arrays(draw, shape, low: float = -3.0, high: float = 3.0, away_from=None,
           margin: float = 1e-3):
    """A float64 array of `shape` with values in [low, high]; with `away_from` (a value or
    a list of them), every element stays `margin` away from those points (kinks). Half of
    the draws are non-contiguous views with the same values."""
    shape = tuple(shape)
    values = draw(hnp.arrays(np.float64, shape, elements=st.floats(
        low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)))
    if away_from is not None:
        for point in np.atleast_1d(away_from):
            too_close = np.abs(values - point) < margin
            values = np.where(too_close, point + margin * np.where(values >= point, 1, -1)
                              * 2, values)
    if values.ndim >= 1 and draw(st.booleans()):
        # The same values inside a larger buffer, read with a stride of 2.
        buffer = np.zeros(shape[:-1] + (2 * shape[-1],))
        buffer[..., ::2] = values
        values = buffer[..., ::2]
        assert not values.flags.c_contiguous or values.size <= 1
    return values


def check_op(fn, *arrays_in: np.ndarray, requires_grad=None, directional: bool = False,
             atol: float = 1e-5, rtol: float = 1e-3, **kwargs) -> None:
    """Gradcheck `fn(*tensors)` in float64 and check the engine's invariants."""
    requires_grad = requires_grad or [True] * len(arrays_in)
    originals = [a.copy() for a in arrays_in]
    tensors = [autograd.Tensor(a, requires_grad=r) for a, r in zip(arrays_in, requires_grad)]
    check = autograd.gradcheck_directional if directional else autograd.gradcheck
    assert check(fn, tensors, atol=atol, rtol=rtol, **kwargs)

    # Invariants, on one more forward/backward pass.
    out = fn(*tensors)
    outputs = out if isinstance(out, (tuple, list)) else [out]
    total = sum((o * autograd.Tensor(np.ones(o.shape))).sum() for o in outputs
                if o.requires_grad)
    if not isinstance(total, autograd.Tensor):
        return
    nodes = topological_order(total.grad_fn)
    total.backward()
    for a, original in zip(arrays_in, originals):
        np.testing.assert_array_equal(a, original, err_msg="an op mutated its input")
    grads = [t.grad.data for t in tensors if t.grad is not None]
    for i, g in enumerate(grads):
        assert g.dtype == np.float64
        for other in grads[i + 1:]:
            assert not np.shares_memory(g, other), "two gradients share memory"
        for a in arrays_in:
            assert not np.shares_memory(g, a), "a gradient shares memory with an input"
    for node in nodes:
        if hasattr(node, "released"):
            assert node.released and not node.saved, f"{node!r} kept its saved arrays"
