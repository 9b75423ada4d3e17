"""Finding NaN and infinite values in nested state (checkpoints, state dicts) by name."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from autograd.backend import get_array_module
from autograd.optim.optimizer import is_array
from autograd.tensor import Tensor


def non_finite_arrays(tree: Any, name: str) -> Iterator[str]:
    """The names ("model/conv_out.bias", "optimizer/state/3/exp_avg") of the floating-point
    arrays, tensors and floats in `tree` (nested dicts, lists and tuples) that hold a NaN or
    an infinity, in order. One device read per array."""
    if isinstance(tree, Tensor):
        tree = tree.data
    if is_array(tree):
        kind = tree.dtype.kind
        if kind in "fc" and not bool(get_array_module(tree).isfinite(tree).all()):
            yield name
    elif isinstance(tree, float):
        if not math.isfinite(tree):
            yield name
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from non_finite_arrays(value, f"{name}/{key}")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from non_finite_arrays(value, f"{name}/{index}")


def first_non_finite(tree: Any, name: str) -> str | None:
    """The name of the first non-finite array in `tree` (see `non_finite_arrays`), or None."""
    return next(non_finite_arrays(tree, name), None)
