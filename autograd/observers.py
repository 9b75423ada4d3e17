"""The one place where tools that watch every op plug in (`autograd.profiler`, anomaly mode,
`autograd.viz.module_scopes`).

`observers` is empty unless such a tool is on, and `Function.apply`, the engine loop and
`Module.__call__` check only that (one truth test per op): watching costs nothing when off.
While any observer is on, every recorded op also remembers its module scope: the modules
being called when it ran, outermost first, as (module, path) pairs, `path` being the name
`named_modules()` gives it under the outermost module ("" for that one).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

observers: list[Observer] = []  # mutated in place only: importers share this list
_local = threading.local()
_paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {id: path}


class Observer:
    """Base class of a watching tool: each method wraps one event and must call `run()`."""

    def forward(self, fn, inputs: tuple, run: Callable[[], Any]):
        return run()

    def backward(self, node, grad, run: Callable[[], Any]):
        return run()

    def module_call(self, module, path: str, run: Callable[[], Any]):
        return run()

    def kernel(self, backend: str) -> None:
        """A compiled kernel is about to run: "numba", "cuda" or "reference"."""


def add(observer: Observer) -> None:
    if not observers:
        _paths.clear()  # modules may have changed since the last tool was on
    observers.append(observer)


def remove(observer: Observer) -> None:
    observers.remove(observer)


class watching:
    """Context manager: `observer` watches every op inside."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def __enter__(self) -> Observer:
        add(self.observer)
        return self.observer

    def __exit__(self, *exc) -> None:
        remove(self.observer)


def _wrapped(kind: str, subject, extra, run: Callable[[], Any]):
    """run() inside every observer's `kind` method, the first observer outermost."""
    for observer in reversed(observers):
        run = functools.partial(getattr(observer, kind), subject, extra, run)
    return run()


def observed_forward(fn, inputs: tuple, arrays: tuple):
    fn.scope = current_scope()
    return _wrapped("forward", fn, inputs, lambda: fn.forward(*arrays))


def observed_backward(node, grad):
    return _wrapped("backward", node, grad, lambda: node.backward(grad))


def observed_kernel(backend: str) -> None:
    for observer in observers:
        observer.kernel(backend)


# ---- the module scope ---------------------------------------------------------------------


def current_scope() -> tuple[tuple[Any, str], ...]:
    """The modules being called on this thread, outermost first, as (module, path)."""
    return getattr(_local, "scope", ())


def observed_module_call(module, run: Callable[[], Any]):
    """run() (the module's call) with `module` on this thread's scope."""
    outer = current_scope()
    path = _path_in(outer[-1], module) if outer else ""
    _local.scope = (*outer, (module, path))
    try:
        return _wrapped("module_call", module, path, run)
    finally:
        _local.scope = outer


def _path_in(parent: tuple[Any, str], module) -> str:
    """The path of `module` under the outermost module, found below the calling one (its
    class name when it is not a submodule of the caller)."""
    caller, caller_path = parent
    paths = _paths.get(caller)
    if paths is None:
        paths = _paths[caller] = {id(m): name for name, m in caller.named_modules() if name}
    name = paths.get(id(module))
    if name is None:
        return type(module).__name__
    return f"{caller_path}.{name}" if caller_path else name


def scope_name(scope: tuple[tuple[Any, str], ...]) -> str:
    """The innermost module of a scope by path (its class name for the outermost)."""
    if not scope:
        return ""
    module, path = scope[-1]
    return path or type(module).__name__
