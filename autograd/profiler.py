"""`autograd.profiler.profile`: the wall time of every op's forward and backward, by op and
by module, as `torch.autograd.profiler.profile`.

    with autograd.profiler.profile() as prof:
        loss = model(x).sum()
        loss.backward()
    print(prof.table(sort_by="total", row_limit=15))

Each event is one op's forward (named by the op, "Conv2d") or backward ("Conv2dBackward"),
with the kernel implementation that ran ("numba", "cuda", "reference"; "numpy" / "cupy"
when the op only calls the array module) and the module it ran in (a backward counts for
the module its forward ran in). Ops on a GPU are timed to the device's completion
(`autograd.cuda.synchronize()` before and after each), unless `use_cuda=False`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autograd import observers
from autograd.backend import get_array_module


@dataclass
class Event:
    """One op's forward or backward: start and duration in seconds (perf_counter)."""

    name: str
    phase: str  # "forward" or "backward"
    start: float
    duration: float
    backend: str
    scope: tuple[str, ...]  # module paths, outermost first
    thread: int


@dataclass
class Row:
    """One line of a table: an op (kind "op") or a module (kind "module"); times in ms."""

    name: str
    kind: str
    calls: int = 0
    total_ms: float = 0.0
    self_ms: float = 0.0
    backends: list[str] = field(default_factory=list)

    @property
    def avg_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "total": lambda r: -r.total_ms, "self": lambda r: -r.self_ms, "avg": lambda r: -r.avg_ms,
    "calls": lambda r: -r.calls, "name": lambda r: r.name,
}
TORCH_SORT_KEYS = {"cpu_time_total": "total", "self_cpu_time_total": "self",
                   "cpu_time": "avg", "count": "calls"}


class EventList(list):
    """Rows of `key_averages()`, printable with `table()`."""

    def table(self, sort_by: str = "total", row_limit: int | None = None) -> str:
        """The rows as text, sorted by "total", "self", "avg", "calls" or "name" (or
        PyTorch's "cpu_time_total", "self_cpu_time_total", "cpu_time", "count")."""
        key = SORT_KEYS.get(TORCH_SORT_KEYS.get(sort_by, sort_by))
        if key is None:
            raise ValueError(f"sort_by must be one of {sorted(SORT_KEYS)}, got {sort_by!r}")
        rows = sorted(self, key=key)[:row_limit]
        everything = sum(r.self_ms for r in self)
        width = max([len(r.name) for r in rows] + [len(self.title)])
        head = (f"{self.title:<{width}}  {'calls':>7}  {'total ms':>10}  {'self ms':>10}  "
                f"{'avg ms':>9}  {'% total':>7}  kernel")
        lines = [head, "-" * len(head)]
        for r in rows:
            share = 100 * r.total_ms / everything if everything else 0.0
            lines.append(f"{r.name:<{width}}  {r.calls:>7}  {r.total_ms:>10.3f}  "
                         f"{r.self_ms:>10.3f}  {r.avg_ms:>9.4f}  {share:>6.1f}%  "
                         f"{','.join(r.backends)}".rstrip())
        return "\n".join(lines)

    @property
    def title(self) -> str:
        return "module" if self and self[0].kind == "module" else "op"


class profile(observers.Observer):
    """Context manager recording every op's forward and backward (see the module doc)."""

    def __init__(self, enabled: bool = True, use_cuda: bool | None = None) -> None:
        self.enabled = enabled
        self.use_cuda = use_cuda
        self.events: list[Event] = []
        self.module_calls: dict[str, int] = {}
        self.wall_seconds = 0.0
        self._current = threading.local()  # the event whose kernels are being noted

    def __enter__(self) -> profile:
        if self.enabled:
            self._started = time.perf_counter()
            observers.add(self)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            observers.remove(self)
            self.wall_seconds += time.perf_counter() - self._started

    # ---- recording (observers.Observer) -------------------------------------------------

    def forward(self, fn, inputs: tuple, run: Callable[[], Any]):
        array = inputs[0].data if inputs else None
        return self._timed(fn.name, "forward", fn.scope, array, run)

    def backward(self, node, grad, run: Callable[[], Any]):
        return self._timed(node.name + "Backward", "backward", node.scope, grad, run)

    def module_call(self, module, path: str, run: Callable[[], Any]):
        name = path or type(module).__name__
        self.module_calls[name] = self.module_calls.get(name, 0) + 1
        return run()

    def kernel(self, backend: str) -> None:
        event = getattr(self._current, "event", None)
        if event is not None and backend not in event.backend.split(","):
            event.backend = backend if event.backend in ("numpy", "cupy") \
                else f"{event.backend},{backend}"

    def _timed(self, name: str, phase: str, scope: tuple, array, run: Callable[[], Any]):
        xp = np if array is None else get_array_module(array)
        sync = xp is not np if self.use_cuda is None else self.use_cuda
        paths = tuple(path or type(module).__name__ for module, path in scope)
        event = Event(name, phase, 0.0, 0.0, xp.__name__.split(".")[0], paths,
                      threading.get_ident())
        outer = getattr(self._current, "event", None)
        self._current.event = event
        try:
            if sync:
                _synchronize()
            start = time.perf_counter()
            result = run()
            if sync:
                _synchronize()
            event.start, event.duration = start, time.perf_counter() - start
        finally:
            self._current.event = outer
        self.events.append(event)
        return result

    # ---- results ------------------------------------------------------------------------

    def key_averages(self, group_by: str = "op") -> EventList:
        """Rows by op name ("op") or by module path ("module": total includes the modules
        it calls, self only its own ops; calls counts the module's calls)."""
        rows: dict[str, Row] = {}

        def row(name: str, kind: str) -> Row:
            if name not in rows:
                rows[name] = Row(name, kind)
            return rows[name]

        for event in self.events:
            ms = event.duration * 1e3
            if group_by == "op":
                r = row(event.name, "op")
                r.calls += 1
                r.total_ms += ms
                r.self_ms += ms
                if event.backend not in r.backends:
                    r.backends.append(event.backend)
            elif group_by == "module":
                scope = event.scope or ("(no module)",)
                for path in dict.fromkeys(scope):  # a module calling itself counts once
                    row(path, "module").total_ms += ms
                row(scope[-1], "module").self_ms += ms
            else:
                raise ValueError(f"group_by must be 'op' or 'module', got {group_by!r}")
        if group_by == "module":
            for name, r in rows.items():
                r.calls = self.module_calls.get(name, 0)
        return EventList(rows.values())

    def table(self, sort_by: str = "total", row_limit: int | None = None) -> str:
        """Both tables, by op and by module, and the totals."""
        ops_ms = sum(event.duration for event in self.events) * 1e3
        parts = [self.key_averages("op").table(sort_by, row_limit)]
        if any(event.scope for event in self.events):
            parts.append(self.key_averages("module").table(sort_by, row_limit))
        threads = len({event.thread for event in self.events})
        parts.append(f"{len(self.events)} op events, {ops_ms:.3f} ms in ops of "
                     f"{self.wall_seconds * 1e3:.3f} ms wall time"
                     + (f" (on {threads} threads, which overlap)" if threads > 1 else ""))
        return "\n\n".join(parts)

    def export_chrome_trace(self, path: str | Path) -> Path:
        """Write the events as a Chrome trace (open in chrome://tracing or Perfetto)."""
        origin = min((event.start for event in self.events), default=0.0)
        trace = [{"name": e.name, "cat": e.phase, "ph": "X", "pid": 0, "tid": e.thread,
                  "ts": (e.start - origin) * 1e6, "dur": e.duration * 1e6,
                  "args": {"kernel": e.backend, "module": e.scope[-1] if e.scope else ""}}
                 for e in self.events]
        path = Path(path)
        path.write_text(json.dumps({"traceEvents": trace}))
        return path


def _synchronize() -> None:
    from autograd import cuda

    cuda.synchronize()
