"""The gradient-check harness every op test uses (modelled on MyGrad's).

`arrays(shape)` draws bounded float64 arrays, sometimes non-contiguous; `shapes` and
`broadcastable_shapes` draw shapes with size-1 and broadcast dims; `check_op` runs
`autograd.gradcheck` (or the directional check for big inputs) and checks the invariants
every op must keep: inputs are not mutated, gradients do not alias each other or the inputs,
and the graph's saved arrays are released after backward. It then runs the same op once more
on device "cuda", on the simulated CuPy (always) and on a real GPU (where there is one), and
compares its outputs and gradients with the CPU's.

`check_torch_case(name, fn)` checks an op's output and gradients against PyTorch's, in
float64 (tests/reference/torch_ops.npz: for case NAME the inputs NAME/in0.., the output
NAME/out, an upstream gradient NAME/upstream and NAME/gradI = d sum(out * upstream) / d inI,
and any extra arrays the case needs, `torch_case(NAME)`).
"""

from __future__ import annotations

from pathlib import Path

import fake_cupy
import numpy as np
from device_testing import GPU_OP_TOLERANCE, SIMULATOR_TOLERANCE
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd.backend import CPU, cuda_module, get_array_module, to_device
from autograd.engine import topological_order

TORCH_REFERENCE = np.load(Path(__file__).parent / "reference" / "torch_ops.npz")


def torch_case(name: str) -> dict[str, np.ndarray]:
    """The arrays of PyTorch reference case `name`, by key (in0, out, upstream, grad0...)."""
    return {key.split("/", 1)[1]: TORCH_REFERENCE[key] for key in TORCH_REFERENCE.files
            if key.startswith(name + "/")}


def check_torch_case(name: str, fn, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    """fn(*inputs of case `name`): its float64 output and every input's gradient (backward of
    <out, upstream>) equal PyTorch's."""
    ref = torch_case(name)
    count = sum(1 for key in ref if key[:2] == "in" and key[2:].isdigit())
    inputs = [autograd.Tensor(ref[f"in{i}"].copy(), requires_grad=True) for i in range(count)]
    out = fn(*inputs)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), ref["out"], rtol=rtol, atol=atol)
    out.backward(autograd.Tensor(ref["upstream"]))
    for i, x in enumerate(inputs):
        np.testing.assert_allclose(x.grad.numpy(), ref[f"grad{i}"], rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")


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


# The device legs' tolerances against the CPU run (float64) are tests/device_testing.py's:
# rounding differences, relative to the largest terms of a sum, so `rtol` of the largest
# entry joins the absolute tolerance (see _assert_close).


def check_op(fn, *arrays_in: np.ndarray, requires_grad=None, directional: bool = False,
             atol: float = 1e-5, rtol: float = 1e-3, device_fn=None, device_legs: bool = True,
             **kwargs) -> None:
    """Gradcheck `fn(*tensors)` in float64, check the engine's invariants, and compare one
    forward/backward of `fn` on device "cuda" with the CPU's.

    A function that holds tensors of its own (a module's parameters and buffers, captured
    statistics) needs them on the device too: `device_fn(device)` returns the function to
    run there instead (e.g. the same computation with a copy of the module moved to the
    device); `device_legs=False` skips the device runs."""
    requires_grad = requires_grad or [True] * len(arrays_in)
    originals = [a.copy() for a in arrays_in]
    tensors = [autograd.Tensor(a, requires_grad=r) for a, r in zip(arrays_in, requires_grad)]
    check = autograd.gradcheck_directional if directional else autograd.gradcheck
    assert check(fn, tensors, atol=atol, rtol=rtol, **kwargs)

    # Invariants, on one more forward/backward pass (its results are the device legs'
    # reference).
    outputs, grads, nodes = _forward_backward(fn, tensors)
    for a, original in zip(arrays_in, originals):
        np.testing.assert_array_equal(a, original, err_msg="an op mutated its input")
    grads_in = [g for g in grads if g is not None]
    for i, g in enumerate(grads_in):
        assert g.dtype == np.float64
        for other in grads_in[i + 1:]:
            assert not np.shares_memory(g, other), "two gradients share memory"
        for a in arrays_in:
            assert not np.shares_memory(g, a), "a gradient shares memory with an input"
    _check_released(nodes)
    if device_legs:
        reference = ([o.data for o in outputs], grads)
        with fake_cupy.simulated_cuda():
            _check_device_leg(fn, device_fn, arrays_in, requires_grad, reference,
                              SIMULATOR_TOLERANCE)
        if _real_gpu():
            _check_device_leg(fn, device_fn, arrays_in, requires_grad, reference,
                              GPU_OP_TOLERANCE)


def _real_gpu() -> bool:
    """Whether device "cuda" is a real GPU (not the simulator, even inside its block)."""
    return autograd.cuda.is_available() and cuda_module() is not fake_cupy


def _upstream(shape: tuple[int, ...], k: int) -> np.ndarray:
    """The fixed upstream gradient of output k: random, so that a device leg that routes a
    gradient to the wrong element disagrees with the CPU."""
    return np.random.default_rng(1000 + k).standard_normal(shape)


def _forward_backward(fn, tensors):
    """fn's tensor outputs, the gradient (an array, or None) of each input tensor after
    backward of sum_k <out_k, upstream_k>, and the graph's nodes."""
    out = fn(*tensors)
    outputs = [o for o in (out if isinstance(out, (tuple, list)) else [out])
               if isinstance(o, autograd.Tensor)]
    terms = [(o * autograd.Tensor(_upstream(o.shape, k).astype(o.dtype), device=o.device))
             .sum() for k, o in enumerate(outputs) if o.requires_grad]
    if not terms:
        return outputs, [None] * len(tensors), []
    total = sum(terms[1:], terms[0])
    nodes = topological_order(total.grad_fn)
    total.backward()
    return outputs, [t.grad.data if t.grad is not None else None for t in tensors], nodes


def _check_released(nodes) -> None:
    for node in nodes:
        if hasattr(node, "released"):
            assert node.released and not node.saved, f"{node!r} kept its saved arrays"


def _on_device_like(a: np.ndarray, device: str):
    """`a` on `device`, non-contiguous there too where it is on the host (read with a
    stride of 2 from a larger buffer, as `arrays` draws it)."""
    if a.flags.c_contiguous or a.ndim == 0:
        return to_device(a, device)
    xp = autograd.backend.array_module(device)
    buffer = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    buffer[..., ::2] = to_device(np.ascontiguousarray(a), device)
    return buffer[..., ::2]


def _assert_close(got, expected: np.ndarray, tolerance: dict, message: str) -> None:
    got = to_device(got, CPU)
    finite = np.abs(expected[np.isfinite(expected)]) if expected.dtype.kind == "f" else \
        np.abs(expected)
    largest = float(finite.max()) if finite.size else 0.0
    np.testing.assert_allclose(got, expected, rtol=tolerance["rtol"], err_msg=message,
                               atol=tolerance["atol"] + tolerance["rtol"] * largest)


def _check_device_leg(fn, device_fn, arrays_in, requires_grad, reference, tolerance) -> None:
    """fn on device "cuda": outputs and gradients on the device, equal to the CPU's within
    `tolerance`; inputs unchanged; gradients that alias nothing; saved arrays released."""
    device = "cuda"
    arrays_there = [_on_device_like(a, device) for a in arrays_in]
    tensors = [autograd.Tensor(a, requires_grad=r) for a, r in zip(arrays_there, requires_grad)]
    assert all(t.device == device for t in tensors)
    try:
        outputs, grads, nodes = _forward_backward(
            fn if device_fn is None else device_fn(device), tensors)
    except RuntimeError as error:
        if "device" not in str(error) or device_fn is not None:
            raise
        raise RuntimeError(f"{error}\n(check_op's device leg: if the checked function holds "
                           "tensors of its own on the cpu, such as a module's parameters or "
                           "buffers, pass check_op(..., device_fn=) to run it with them on "
                           "the device, or device_legs=False)") from error
    expected_outputs, expected_grads = reference
    assert len(outputs) == len(expected_outputs), "the device run gave other outputs"
    for k, (out, expected) in enumerate(zip(outputs, expected_outputs)):
        assert out.device == device, f"output {k} is on {out.device}, expected {device}"
        assert out.dtype == expected.dtype and out.shape == expected.shape
        _assert_close(out.data, expected, tolerance, f"output {k} on {device} differs from "
                      "the cpu's")
    for i, (a, there) in enumerate(zip(arrays_in, arrays_there)):
        np.testing.assert_array_equal(to_device(there, CPU), a,
                                      err_msg=f"the op mutated input {i} on {device}")
    for i, (got, expected) in enumerate(zip(grads, expected_grads)):
        assert (got is None) == (expected is None), f"input {i}: a gradient on one device only"
        if got is None:
            continue
        assert autograd.backend.device_of(got) == device, \
            f"the gradient of input {i} is on {autograd.backend.device_of(got)}"
        assert got.dtype == expected.dtype
        _assert_close(got, expected, tolerance, f"the gradient of input {i} on {device} "
                      "differs from the cpu's")
        xp = get_array_module(got)
        others = [*arrays_there, *(g for j, g in enumerate(grads) if g is not None and j != i)]
        assert not any(xp.shares_memory(got, other) for other in others), \
            f"the gradient of input {i} on {device} shares memory with an input or a gradient"
    _check_released(nodes)
