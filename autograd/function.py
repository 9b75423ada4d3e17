"""`Function`: one differentiable op, written as a forward and a backward on raw arrays.

Following Chainer, an op only defines the math; the graph bookkeeping lives here, once:
recording the parents of the output, saving arrays with their version counters, reducing
each incoming gradient to its input's shape and dtype, and releasing what backward saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from autograd.backend import device_of, get_array_module
from autograd.grad_mode import is_grad_enabled
from autograd.observers import observed_forward, observers

if TYPE_CHECKING:
    from autograd.tensor import Tensor


# What a node keeps once backward has released its arrays: the graph's structure.
_KEPT_AFTER_BACKWARD = frozenset(("parents", "input_meta", "output_meta", "needs_input_grad",
                                  "tensor_hooks", "scope"))


class Function:
    """Base class of every op. Subclasses define `forward(*arrays)` and `backward(grad)`.

    `__init__` of a subclass takes the op's non-tensor arguments (dim, stride, ...).
    `backward` returns one gradient per tensor input (a tuple, or a single array for one
    input), or None for an input that needs none; `self.needs_input_grad` says which.
    Gradients may have the broadcast shape: the engine sums them back to each input's shape.
    Class attribute `is_view = True` marks ops whose output aliases the input's memory, so
    the two share one version counter.
    """

    is_view = False
    needs_input_grad: tuple[bool, ...] = ()
    saved: tuple = ()
    tensor_hooks: TensorHooks | None = None  # of the output tensor (register_hook)
    scope: tuple = ()  # the modules it ran in, recorded while a tool watches (observers)

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def save_for_backward(self, *arrays) -> None:
        """Keep arrays for backward; those that are an input's or the output's array are
        checked against in-place modification before backward runs."""
        self.saved = arrays

    @classmethod
    def apply(cls, *inputs: Tensor, **params: Any) -> Tensor:
        """Run the op on tensors and, when grad mode is on and an input requires grad,
        record it in the graph."""
        from autograd.tensor import Tensor

        fn = cls(**params)
        arrays = tuple(t.data for t in inputs)
        if len(arrays) > 1:
            check_same_device(fn.name, arrays)
        record = is_grad_enabled() and any(t.requires_grad for t in inputs)
        fn.needs_input_grad = tuple(record and t.requires_grad for t in inputs)
        try:
            result = observed_forward(fn, inputs, arrays) if observers else fn.forward(*arrays)
        except ValueError as error:  # name the shapes involved (broadcasting, reshapes...)
            shapes = ", ".join(str(t.shape) for t in inputs)
            raise ValueError(f"{fn.name} on shapes {shapes}: {error}") from None
        if isinstance(result, np.generic):  # NumPy reductions give scalars, not 0-d arrays
            result = np.asarray(result)
        output = Tensor._wrap(result, requires_grad=record)
        if cls.is_view:
            output._version_counter = inputs[0]._version_counter
        if record:
            fn._connect(inputs, output)
        else:
            fn.saved = ()
        return output

    # ---- graph bookkeeping --------------------------------------------------------------

    def _connect(self, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.parents = tuple(t._grad_node() for t in inputs)
        self.input_meta = tuple((t.data.shape, t.data.dtype, get_array_module(t.data))
                                for t in inputs)
        owners = {id(t.data): t for t in (*inputs, output)}
        self.saved_versions = [
            (owners[id(array)], owners[id(array)]._version_counter.value)
            for array in self.saved
            if id(array) in owners
        ]
        self.output_meta = (output._data.shape, output._data.dtype)  # outlives the arrays
        self.released = False
        output.grad_fn = self

    def _check_versions(self) -> None:
        for tensor, version in self.saved_versions:
            if tensor._version_counter.value != version:
                raise RuntimeError(
                    f"one of the arrays needed for the gradient of {self.name} was modified "
                    f"by an in-place operation: its tensor of shape {tensor.shape} is at "
                    f"version {tensor._version_counter.value}, expected version {version}. "
                    "Use an out-of-place op (x = x + y) or clone() the tensor first."
                )

    def _release(self) -> None:
        """Drop everything backward needed; keep only the graph's structure."""
        count = len(self.saved)
        self.__dict__ = {k: v for k, v in self.__dict__.items() if k in _KEPT_AFTER_BACKWARD}
        self.released, self.released_saved = True, count

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.name}Backward>"


class AccumulateGrad:
    """The graph node of a leaf tensor that requires grad: adds incoming gradients to
    `tensor.grad`."""

    parents = ()
    tensor_hooks: TensorHooks | None = None
    scope: tuple = ()

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor

    def __repr__(self) -> str:
        return f"<AccumulateGrad shape={self.tensor.shape}>"


class TensorHooks:
    """The hooks registered on one tensor (`Tensor.register_hook`), kept on its graph node,
    and whether `retain_grad()` asked for its `.grad` (a weak reference to the tensor)."""

    def __init__(self) -> None:
        self.hooks: dict[int, Callable] = {}
        self.retained: Callable[[], Tensor | None] | None = None

    def __call__(self, grad):
        """The gradient after every hook, in registration order (each gets the previous
        one's result); fills the retained tensor's `.grad` with it."""
        from autograd.tensor import Tensor

        for hook in tuple(self.hooks.values()):
            result = hook(Tensor._wrap(grad))
            if result is not None:
                replacement = result.data if isinstance(result, Tensor) else result
                if replacement.shape != grad.shape:
                    raise RuntimeError(f"hook {hook!r} returned a gradient of shape "
                                       f"{replacement.shape}, expected {grad.shape}")
                grad = replacement
        tensor = self.retained() if self.retained is not None else None
        if tensor is not None:
            from autograd.engine import _accumulate_into

            _accumulate_into(tensor, grad)
        return grad


def check_same_device(op: str, arrays) -> None:
    """Raise, naming both devices, unless all arrays live on one device."""
    first = type(arrays[0])
    if first is np.ndarray and all(type(a) is first for a in arrays):
        return
    devices = []
    for a in arrays:
        if str(device_of(a)) not in devices:
            devices.append(str(device_of(a)))
    if len(devices) > 1:
        raise RuntimeError(f"{op}: expected all tensors on one device, found {devices[0]} "
                           f"and {devices[1]}: move them with .to(device) first")


def sum_to_shape(grad, shape: tuple[int, ...]):
    """Sum a broadcast gradient back to `shape` (the reverse of broadcasting)."""
    if grad.shape == shape:
        return grad
    xp = get_array_module(grad)
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, size in enumerate(shape) if size == 1 and grad.shape[extra + i] != 1
    )
    return xp.sum(grad, axis=axes).reshape(shape) if axes else grad.reshape(shape)
