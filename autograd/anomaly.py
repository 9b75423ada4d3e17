"""Anomaly detection, as PyTorch's: `with autograd.detect_anomaly():` (or
`autograd.set_detect_anomaly(True)`) makes backward raise at the first op whose backward
returns a NaN or infinite gradient, naming the op, the line of user code that created it
(captured in the forward while the mode is on) and its input shapes. It slows every op
down; use it to find a bad op, not to train.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from autograd import observers
from autograd.backend import get_array_module

_AUTOGRAD_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _AnomalyMode(observers.Observer):
    """Records where each op was created; checks each backward's gradients."""

    check_nan = True

    def forward(self, fn, inputs: tuple, run: Callable[[], Any]):
        fn.creation_site = creation_site()
        return run()

    def backward(self, node, grad, run: Callable[[], Any]):
        grads = run()
        if not self.check_nan:
            return grads
        for index, g in enumerate(grads if isinstance(grads, tuple) else (grads,)):
            if g is not None and not bool(get_array_module(g).isfinite(g).all()):
                raise RuntimeError(describe(node, index, g))
        return grads


_mode = _AnomalyMode()


def creation_site() -> str:
    """"file:line in function" of the innermost caller outside autograd's own files."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_AUTOGRAD_DIR):
        frame = frame.f_back
    if frame is None:
        return "unknown"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def describe(node, index: int, grad) -> str:
    xp = get_array_module(grad)
    kind = "nan" if bool(xp.isnan(grad).any()) else "infinite"
    shapes = ", ".join(str(shape) for shape, _, _ in node.input_meta)
    site = getattr(node, "creation_site", "unknown (created before anomaly mode was on)")
    module = observers.scope_name(node.scope)
    return (f"Function '{node.name}Backward' returned {kind} values in its {index}th output "
            f"(the gradient for input {index}). The {node.name} op was created at {site}"
            + (f", in module {module}" if module else "")
            + f", on inputs of shapes {shapes}.")


def is_anomaly_enabled() -> bool:
    return _mode in observers.observers


def set_detect_anomaly(mode: bool) -> None:
    """Turn anomaly detection on or off (globally)."""
    if mode and not is_anomaly_enabled():
        observers.add(_mode)
    elif not mode and is_anomaly_enabled():
        observers.remove(_mode)


@contextlib.contextmanager
def detect_anomaly(check_nan: bool = True):
    """Anomaly detection inside the block (`check_nan=False`: only record creation sites)."""
    previous, saved = is_anomaly_enabled(), _mode.check_nan
    set_detect_anomaly(True)
    _mode.check_nan = check_nan
    try:
        yield
    finally:
        _mode.check_nan = saved
        set_detect_anomaly(previous)
