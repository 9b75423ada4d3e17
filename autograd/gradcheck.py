"""Check analytic gradients against central finite differences, in float64.

`gradcheck` compares every element: for a fixed random upstream gradient v it checks
d<v, f(x)>/dx element by element (2 forward passes per input element, one backward).
`gradcheck_directional` checks big ops with two forward passes whatever their size: for
random directions u, <grad, u> against (f(x + h u) - f(x - h u)) / 2h (Chainer's check).

Inputs may live on any device: the function runs, and is perturbed, on the inputs' device;
the random upstream gradients and directions are drawn on the host (so a seed checks the
same thing everywhere) and the gradients are compared on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from autograd.backend import CPU, to_device
from autograd.grad_mode import enable_grad, no_grad
from autograd.tensor import Tensor


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def _as_outputs(result) -> list[Tensor]:
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    return [out for out in outputs if isinstance(out, Tensor)]


def _checked_inputs(inputs: Sequence) -> list[Tensor]:
    inputs = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(
                f"gradcheck input {i} has dtype {x.dtype}: finite differences need float64 "
                "(use .double())"
            )
    return inputs


def _analytic(fn: Callable, inputs: list, upstreams: list[np.ndarray] | None, rng):
    """Gradients of sum_k <v_k, out_k> w.r.t. each input that requires grad, plus the v_k."""
    leaves = [x.detach().requires_grad_(True) if _needs(x) else x for x in inputs]
    with enable_grad():
        outputs = _as_outputs(fn(*leaves))
    if upstreams is None:
        upstreams = [rng.standard_normal(out.shape) for out in outputs]
    total = None
    for out, v in zip(outputs, upstreams):
        if out.requires_grad:
            term = (out * Tensor(v.astype(out.dtype), device=out.device)).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    grads = [
        (to_device(leaf.grad.data, CPU) if leaf.grad is not None else np.zeros(leaf.shape))
        if _needs(x) else None
        for x, leaf in zip(inputs, leaves)
    ]
    return grads, upstreams


def _needs(x) -> bool:
    return isinstance(x, Tensor) and x.requires_grad


def _objective(fn: Callable, inputs: list, upstreams: list[np.ndarray]) -> float:
    with no_grad():
        outputs = _as_outputs(fn(*inputs))
    return float(sum((out.data * to_device(v, out.device)).sum()
                     for out, v in zip(outputs, upstreams)))


def _report(i, index, analytic, numeric, what="") -> GradcheckError:
    return GradcheckError(
        f"gradient mismatch for input {i}{what} at index {index}: "
        f"analytic {analytic!r}, numerical {numeric!r}"
    )


def _first_non_finite(i: int, analytic: np.ndarray, numeric: np.ndarray) -> GradcheckError | None:
    """The error naming the first element where either gradient is NaN or infinite."""
    bad = ~(np.isfinite(analytic) & np.isfinite(numeric))
    if not bad.any():
        return None
    index = tuple(int(k) for k in np.unravel_index(np.argmax(bad), analytic.shape))
    return GradcheckError(
        f"non-finite gradient for input {i} at index {index}: analytic "
        f"{float(analytic[index])!r}, numerical {float(numeric[index])!r}")


def _check_reentrant(fn: Callable, inputs: list, upstreams, analytic, nondet_tol: float):
    """Backward run twice must agree within nondet_tol (PyTorch's check, default exact)."""
    again, _ = _analytic(fn, inputs, upstreams, None)
    for i, (first, second) in enumerate(zip(analytic, again)):
        if first is None:
            continue
        same = (first == second) | (np.isnan(first) & np.isnan(second))  # non-finite: later
        with np.errstate(invalid="ignore"):
            differs = ~(same | (np.abs(first - second) <= nondet_tol))
        if differs.any():
            index = tuple(int(k) for k in np.unravel_index(np.argmax(differs), first.shape))
            return GradcheckError(
                f"backward is not reentrant for input {i} at index {index}: two runs gave "
                f"{float(first[index])!r} and {float(second[index])!r} (nondet_tol="
                f"{nondet_tol})")
    return None


def gradcheck(
    fn: Callable,
    inputs: Sequence,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    seed: int = 0,
    nondet_tol: float = 0.0,
) -> bool:
    """Compare analytic gradients of `fn(*inputs)` with central differences, element by
    element, for every input tensor that requires grad (those must be float64).

    Also fails when a gradient (analytic or numerical) is NaN or infinite, and when a
    second backward gives a gradient more than `nondet_tol` away from the first. An input
    the outputs do not depend on must get a zero gradient (its differences are zero).
    Returns True, or raises GradcheckError naming the worst element (input, index, analytic
    value, numerical value); with `raise_exception=False` returns False instead."""
    inputs = _checked_inputs(inputs)
    rng = np.random.default_rng(seed)
    analytic, upstreams = _analytic(fn, inputs, None, rng)
    error = _check_reentrant(fn, inputs, upstreams, analytic, nondet_tol)
    for i, x in enumerate(inputs):
        if error is not None:
            break
        if analytic[i] is None:
            continue
        probe = x.detach().clone()
        flat = probe.data.reshape(-1)  # probe is contiguous: this writes through
        values = to_device(flat, CPU).copy()  # the originals, as host numbers
        numeric = np.empty(flat.size)
        trial = list(inputs)
        trial[i] = probe
        for k in range(flat.size):
            flat[k] = values[k] + eps
            plus = _objective(fn, trial, upstreams)
            flat[k] = values[k] - eps
            minus = _objective(fn, trial, upstreams)
            flat[k] = values[k]
            numeric[k] = (plus - minus) / (2 * eps)
        numeric = numeric.reshape(x.shape)
        error = _first_non_finite(i, analytic[i], numeric)
        if error is not None or not numeric.size:
            continue
        excess = np.abs(analytic[i] - numeric) - (atol + rtol * np.abs(numeric))
        if excess.max() > 0:
            worst = tuple(int(k) for k in np.unravel_index(np.argmax(excess), x.shape))
            error = _report(i, worst, float(analytic[i][worst]), float(numeric[worst]))
    if error is None:
        return True
    if raise_exception:
        raise error
    return False


def gradcheck_directional(
    fn: Callable,
    inputs: Sequence,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    directions: int = 2,
    seed: int = 0,
    nondet_tol: float = 0.0,
) -> bool:
    """Check <analytic gradient, u> against the directional central difference for random
    directions u over all inputs at once. Two forward passes per direction. Non-finite
    gradients and a backward that is not reentrant (see `gradcheck`) fail too."""
    inputs = _checked_inputs(inputs)
    rng = np.random.default_rng(seed)
    analytic, upstreams = _analytic(fn, inputs, None, rng)
    error = _check_reentrant(fn, inputs, upstreams, analytic, nondet_tol)
    if error is not None:
        raise error
    for i, g in enumerate(analytic):
        if g is not None and not np.all(np.isfinite(g)):
            raise _first_non_finite(i, g, np.zeros_like(g))
    for d in range(directions):
        steps = [rng.standard_normal(x.shape) if g is not None else None
                 for x, g in zip(inputs, analytic)]
        predicted = sum(float(np.sum(g * u)) for g, u in zip(analytic, steps) if g is not None)

        steps_there = [to_device(u, x.device) if u is not None else None
                       for x, u in zip(inputs, steps)]
        plus = [Tensor(x.data + eps * u) if u is not None else x
                for x, u in zip(inputs, steps_there)]
        minus = [Tensor(x.data - eps * u) if u is not None else x
                 for x, u in zip(inputs, steps_there)]
        numeric = (_objective(fn, plus, upstreams) - _objective(fn, minus, upstreams)) / (2 * eps)
        if not np.isfinite(numeric):
            raise GradcheckError(f"non-finite gradient for inputs (directional) at direction "
                                 f"{d}: analytic {predicted!r}, numerical {numeric!r}")
        if not abs(predicted - numeric) <= atol + rtol * abs(numeric):
            raise _report("s", f"direction {d}", predicted, numeric, " (directional)")
    return True
