"""Hook handles, and the graph nodes behind `Module.register_full_backward_hook`.

`RemovableHandle` is PyTorch's: `register_*` returns one; `handle.remove()` (or leaving its
`with` block) unregisters the hook. Hooks live in dicts keyed by a global counter, so each
kind fires in the order it was registered.

`gather_gradients(tensors, on_grads)` hands back identity copies of tensors whose
gradients reach one node together, as PyTorch's BackwardHookFunction: once the engine has
every one of them, `on_grads(grads)` runs and returns the gradients passed on (None for
copies that got none). The identities send an empty sentinel to that node, whose
`backward` then reads what they stored.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from autograd.backend import get_array_module
from autograd.function import Function

_ids = itertools.count()


class RemovableHandle:
    """Removes its hook from the dicts it was registered in."""

    def __init__(self, *hooks_dicts: dict) -> None:
        self.id = next(_ids)
        self.hooks_dicts = hooks_dicts

    def remove(self) -> None:
        for hooks in self.hooks_dicts:
            hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def add_hook(hooks: dict, hook: Callable, prepend: bool = False) -> RemovableHandle:
    """Register `hook` in `hooks` (last, or first with `prepend`)."""
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        for key in [key for key in hooks if key != handle.id]:
            hooks[key] = hooks.pop(key)
    return handle


class BackwardHookFunction(Function):
    """Where the gradients of gathered tensors meet: parents are the tensors' nodes."""

    def __init__(self, on_grads: Callable[[tuple], Sequence | None], count: int) -> None:
        self.on_grads = on_grads
        self.grads: list = [None] * count

    def backward(self, grad):
        replaced = self.on_grads(tuple(self.grads))
        return tuple(self.grads if replaced is None else replaced)


class _GatheredCopy(Function):
    """Identity of one gathered tensor: stores its gradient in the meeting node."""

    def __init__(self, meeting: BackwardHookFunction, index: int) -> None:
        self.meeting, self.index = meeting, index

    def forward(self, sentinel, array):
        return array

    def backward(self, grad):
        self.meeting.grads[self.index] = grad
        return get_array_module(grad).zeros((), grad.dtype), None

    @property
    def name(self) -> str:
        return "BackwardHookFunction"


def gather_gradients(tensors: Sequence, on_grads: Callable[[tuple], Sequence | None]) -> list:
    """Identity copies of `tensors` (all requiring grad, grad mode on) whose gradients are
    handed to `on_grads` together; it returns their replacements, or None to keep them."""
    from autograd.tensor import Tensor

    meeting = BackwardHookFunction(on_grads, len(tensors))
    xp = get_array_module(tensors[0].data)
    sentinel = Tensor._wrap(xp.zeros((), tensors[0].dtype), requires_grad=True)
    meeting.needs_input_grad = (True,) * len(tensors)
    meeting._connect(tuple(tensors), sentinel)
    copies = []
    for index, tensor in enumerate(tensors):
        copy = _GatheredCopy.apply(sentinel, tensor.detach(), meeting=meeting, index=index)
        copy._version_counter = tensor._version_counter  # the same array
        copies.append(copy)
    return copies
