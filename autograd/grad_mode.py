"""Whether ops record the graph: `no_grad()`, `enable_grad()`, `set_grad_enabled(mode)`.

Each works as a context manager and as a decorator, as in PyTorch."""

from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn graph recording on or off; restores the previous mode on exit."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self.previous = is_grad_enabled()
        _state.enabled = self.mode

    def __enter__(self) -> None:
        _state.enabled = self.mode

    def __exit__(self, *exc) -> None:
        _state.enabled = self.previous


class _GradMode(contextlib.ContextDecorator):
    mode = True

    def __enter__(self) -> None:
        self.previous = is_grad_enabled()
        _state.enabled = self.mode

    def __exit__(self, *exc) -> None:
        _state.enabled = self.previous


class no_grad(_GradMode):
    """Ops inside do not record the graph (inference, parameter updates)."""

    mode = False


class enable_grad(_GradMode):
    """Ops inside record the graph, even within `no_grad()`."""

    mode = True
