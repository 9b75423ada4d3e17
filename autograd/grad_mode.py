"""Whether ops record the graph: `no_grad()`, `enable_grad()`, `set_grad_enabled(mode)`.

Each works as a context manager and as a decorator, as in PyTorch."""

from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn graph recording on or off, as PyTorch does: called as a function it switches the
    mode at once; as a context manager it restores the previous mode on exit; as a
    decorator it changes nothing when applied, only while the function runs."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self.previous = is_grad_enabled()
        _state.enabled = self.mode

    def __call__(self, function):
        # Decorating: undo the switch the call made, then set the mode per run.
        _state.enabled = self.previous
        return super().__call__(function)

    def _recreate_cm(self):
        # A fresh manager per decorated call, that does not switch the mode when built.
        manager = object.__new__(type(self))
        manager.mode, manager.previous = self.mode, None
        return manager

    def __enter__(self) -> None:
        if self.previous is None:  # a decorated call's manager: the mode before the call
            self.previous = is_grad_enabled()
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
