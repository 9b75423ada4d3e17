"""`Tensor`: an n-dimensional array that remembers the op that made it.

The array lives in `.data`: a NumPy array on device "cpu", a CuPy array on "cuda"
(`.device` says which; `.to(device)` moves it). `grad_fn` is the op that produced it (None
for leaves); `.grad` receives d(output)/d(tensor) from `backward()`. Every differentiable
method is a `Function` from `autograd.ops`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from autograd.backend import (
    CPU,
    Device,
    cuda_module,
    device_of,
    get_array_module,
    is_cupy_array,
    is_floating,
    to_device,
)
from autograd.function import AccumulateGrad, TensorHooks
from autograd.grad_mode import is_grad_enabled
from autograd.hooks import RemovableHandle, add_hook

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)
default_dtype = float32


class _VersionCounter:
    """Counts in-place modifications of an array; shared by a tensor and its views."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


def as_array(data: Any, dtype=None, device: str | Device | None = None):
    """The array a Tensor holds for `data`: Python numbers and lists become float32 (or
    `dtype`); NumPy and CuPy arrays keep their dtype unless `dtype` is given, sharing memory
    when they can. `device` moves the result there (None: it stays where it is)."""
    if isinstance(data, Tensor):
        data = data.data
    if is_cupy_array(data):
        cuda_module()  # registers CuPy's array type (or says why the GPU is unusable)
    xp = get_array_module(data)
    if xp is not np or isinstance(data, (np.ndarray, np.generic)):
        array = xp.asarray(data) if dtype is None else xp.asarray(data, dtype=dtype)
    else:
        array = np.asarray(data, dtype=default_dtype if dtype is None else dtype)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"cannot make a tensor of dtype {array.dtype} (from {type(data)})")
    return array if device is None else to_device(array, device)


def host_copy_error(tensor_device: Device, what: str) -> TypeError:
    return TypeError(f"cannot {what} a tensor on {tensor_device}: copy it to the host first "
                     "with .cpu()")


class Tensor:
    """An array with an autograd history. `Tensor(ndarray)` shares the array's memory (as
    `torch.from_numpy`); `autograd.tensor(...)` copies."""

    __slots__ = ("_data", "_requires_grad", "grad", "grad_fn", "_version_counter",
                 "_accumulator", "__weakref__")
    __array_ufunc__ = None  # numpy defers binary ops (ndarray * Tensor) to Tensor

    def __init__(self, data: Any, requires_grad: bool = False, dtype=None,
                 device: str | Device | None = None) -> None:
        self._data = as_array(data, dtype, device)
        self.grad: Tensor | None = None
        self.grad_fn = None
        self._version_counter = _VersionCounter()
        self._accumulator = None
        self._requires_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _wrap(cls, array, requires_grad: bool = False) -> Tensor:
        """Fast constructor for op outputs: no conversion, no checks."""
        tensor = Tensor.__new__(Tensor)
        tensor._data = array
        tensor._requires_grad = requires_grad
        tensor.grad = None
        tensor.grad_fn = None
        tensor._version_counter = _VersionCounter()
        tensor._accumulator = None
        return tensor

    # ---- properties ---------------------------------------------------------------------

    @property
    def data(self):
        """The underlying array. Writing into it bypasses autograd's checks."""
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data = as_array(value, None)

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not is_floating(self._data.dtype):
            raise RuntimeError(
                f"only floating-point tensors can require gradients, got dtype {self.dtype}"
            )
        if not value and self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad can only be turned off on leaf tensors; use detach()"
            )
        self._requires_grad = bool(value)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def device(self) -> Device:
        return CPU if isinstance(self._data, np.ndarray) else device_of(self._data)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def _version(self) -> int:
        return self._version_counter.value

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self._data.size)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ---- autograd -----------------------------------------------------------------------

    def _grad_node(self):
        """This tensor's node in the graph: its grad_fn, its accumulator if it is a leaf
        that requires grad, else None."""
        if self.grad_fn is not None:
            return self.grad_fn
        if self._requires_grad:
            if self._accumulator is None:
                self._accumulator = AccumulateGrad(self)
            return self._accumulator
        return None

    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into the `.grad` of every leaf that requires grad.

        `gradient` (same shape as self) is required unless self holds a single element."""
        from autograd.engine import run_backward

        if not self._requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad and has no grad_fn"
            )
        if gradient is None:
            if self._data.size != 1:
                raise RuntimeError(
                    "grad can be implicitly created only for scalar outputs; this tensor has "
                    f"shape {self.shape}: pass backward(gradient) of that shape"
                )
            grad = get_array_module(self._data).ones_like(self._data)
        else:
            grad = as_array(gradient, self.dtype, self.device)
            if grad.shape != self.shape:
                raise RuntimeError(
                    f"backward gradient has shape {grad.shape}, expected the tensor's shape "
                    f"{self.shape}"
                )
        run_backward(self, grad, retain_graph=retain_graph)

    def retain_grad(self) -> None:
        """Also fill `.grad` of this non-leaf tensor during backward (after its hooks)."""
        if self.grad_fn is not None:
            self._tensor_hooks().retained = weakref.ref(self)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
        """Call `hook(grad)` with this tensor's gradient during backward, once it is complete;
        a returned tensor replaces it. On a leaf it runs before the gradient is added to
        `.grad`. Returns a handle whose `remove()` unregisters it (as PyTorch)."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require "
                               "gradient")
        return add_hook(self._tensor_hooks().hooks, hook)

    def _tensor_hooks(self) -> TensorHooks:
        node = self._grad_node()
        if node.tensor_hooks is None:
            node.tensor_hooks = TensorHooks()
        return node.tensor_hooks

    def detach(self) -> Tensor:
        """The same array, cut from the graph (shares memory and version counter)."""
        out = Tensor._wrap(self._data)
        out._version_counter = self._version_counter
        return out

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    # ---- conversion ---------------------------------------------------------------------

    def numpy(self, force: bool = False) -> np.ndarray:
        """The NumPy array (shared memory) of a CPU tensor; `force=True` also copies a GPU
        tensor to the host (as PyTorch)."""
        if self.device != CPU:
            if not force:
                raise host_copy_error(self.device, "convert to NumPy")
            return to_device(self._data, CPU)
        return self._data

    def __array__(self, dtype=None, copy=None):
        if self.device != CPU:
            raise host_copy_error(self.device, "convert to NumPy")
        return self._data if dtype is None else self._data.astype(dtype)

    def item(self) -> float | int | bool:
        if self._data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec) if self._data.size == 1 and spec else repr(self)

    def to(self, *args, **kwargs) -> Tensor:
        """`to(device)`, `to(dtype)`, `to(device, dtype)` or `to(other)` (other's device and
        dtype), also as keywords, as PyTorch; differentiable. Returns self when nothing
        changes, else a copy on the new device / in the new dtype."""
        target, dtype = _parse_to(args, kwargs)
        out = self if dtype is None else ops.cast(self, dtype)
        return out if target is None else ops.move_to(out, target)

    def cpu(self) -> Tensor:
        return self.to(CPU)

    def cuda(self, device: int | str | Device | None = None) -> Tensor:
        """This tensor on the GPU ("cuda:0", or the GPU `device` names)."""
        index = device if isinstance(device, int) else None
        return self.to(Device("cuda", index) if device is None or index is not None
                       else device)

    def float(self) -> Tensor:
        return self.to(float32)

    def double(self) -> Tensor:
        return self.to(float64)

    def long(self) -> Tensor:
        return self.to(int64)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def clone(self) -> Tensor:
        return ops.clone(self)

    def contiguous(self) -> Tensor:
        return self if self._data.flags.c_contiguous else ops.clone(self)

    # ---- in-place updates (not recorded in the graph) -----------------------------------

    def _begin_inplace(self) -> np.ndarray:
        if self._requires_grad and is_grad_enabled():
            kind = "a leaf tensor" if self.grad_fn is None else "a tensor"
            raise RuntimeError(
                f"in-place operation on {kind} that requires grad while autograd records: "
                "use the out-of-place form (x = x + y) or wrap the update in no_grad()"
            )
        self._version_counter.value += 1
        return self._data

    def _operand(self, value, any_device: bool = False):
        """A tensor, array or number as the operand of an in-place update of this tensor:
        its array on this tensor's device. Tensors must already be there unless
        `any_device` (copy_ reads from anywhere); arrays are constants and are moved."""
        if isinstance(value, Tensor):
            if not any_device and value.device != self.device:
                raise RuntimeError(f"in-place update of a tensor on {self.device} with a "
                                   f"tensor on {value.device}: move it with .to(device)")
            value = value.data
        if isinstance(value, np.ndarray) or is_cupy_array(value):
            return to_device(value, self.device)
        return value

    def _inplace(self, name: str, other) -> Tensor:
        other = self._operand(other)
        data = self._begin_inplace()
        getattr(get_array_module(data), name)(data, other, out=data, casting="same_kind")
        return self

    def add_(self, other, alpha: float = 1.0) -> Tensor:
        other = self._operand(other)
        return self._inplace("add", other if alpha == 1.0 else other * alpha)

    def sub_(self, other) -> Tensor:
        return self._inplace("subtract", other)

    def mul_(self, other) -> Tensor:
        return self._inplace("multiply", other)

    def div_(self, other) -> Tensor:
        return self._inplace("divide", other)

    def zero_(self) -> Tensor:
        self._begin_inplace()[...] = 0
        return self

    def fill_(self, value) -> Tensor:
        self._begin_inplace()[...] = value
        return self

    def copy_(self, source) -> Tensor:
        """Copy `source` (a tensor on any device, an array or a number) into this tensor."""
        source = self._operand(source, any_device=True)
        data = self._begin_inplace()
        get_array_module(data).copyto(data, source, casting="same_kind")
        return self

    def clamp_(self, min=None, max=None) -> Tensor:
        data = self._begin_inplace()
        get_array_module(data).clip(data, min, max, out=data)
        return self

    def uniform_(self, low: float = 0.0, high: float = 1.0, generator=None) -> Tensor:
        """Fill with U(low, high) samples, drawn on the host from `generator` (so a seed
        gives the same values on every device)."""
        from autograd.random import resolve

        values = resolve(generator).uniform(low, high, size=self.shape).astype(self.dtype)
        return self.copy_(values)

    def normal_(self, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
        """Fill with N(mean, std^2) samples, drawn on the host from `generator`."""
        from autograd.random import resolve

        values = resolve(generator).normal(mean, std, size=self.shape).astype(self.dtype)
        return self.copy_(values)

    def __setitem__(self, index, value) -> None:
        value = self._operand(value)
        data = self._begin_inplace()
        data[ops.index_key(index, data)] = value

    def _inplace_or_rebind(self, method, fn, other) -> Tensor:
        # `x += y` updates x in place when autograd is not recording x; when it is, it
        # rebinds x to the new tensor `x + y`, exactly like writing `x = x + y`.
        if self._requires_grad and is_grad_enabled():
            return fn(self, other)
        return method(other)

    def __iadd__(self, other):
        return self._inplace_or_rebind(self.add_, ops.add, other)

    def __isub__(self, other):
        return self._inplace_or_rebind(self.sub_, ops.sub, other)

    def __imul__(self, other):
        return self._inplace_or_rebind(self.mul_, ops.mul, other)

    def __itruediv__(self, other):
        return self._inplace_or_rebind(self.div_, ops.div, other)

    # ---- arithmetic ---------------------------------------------------------------------

    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __pow__(self, other):
        return ops.pow(self, other)

    def __rpow__(self, other):
        return ops.pow(other, self)

    def __neg__(self):
        return ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return ops.abs(self)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    # Comparisons give boolean tensors outside the graph.
    def __lt__(self, other):
        return ops.lt(self, other)

    def __le__(self, other):
        return ops.le(self, other)

    def __gt__(self, other):
        return ops.gt(self, other)

    def __ge__(self, other):
        return ops.ge(self, other)

    def __eq__(self, other):  # type: ignore[override]
        return ops.eq(self, other)

    def __ne__(self, other):  # type: ignore[override]
        return ops.ne(self, other)

    __hash__ = object.__hash__

    def __invert__(self):
        return ops.logical_not(self)

    def __and__(self, other):
        return ops.logical_and(self, other)

    def __or__(self, other):
        return ops.logical_or(self, other)

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self._data.size} elements is ambiguous"
            )
        return bool(self._data)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        body = np.array2string(to_device(self._data, CPU), separator=", ", prefix="tensor(")
        extras = []
        if self.device != CPU:
            extras.append(f"device='{self.device}'")
        if self.dtype != float32:
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={self.grad_fn!r}")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"


def _parse_to(args: tuple, kwargs: dict) -> tuple[Device | None, np.dtype | None]:
    """(device, dtype) from Tensor.to's arguments; None where one is not given."""
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy"}
    if unknown or len(args) > 2:
        raise TypeError(f"to() takes a device, a dtype or a tensor, got {args} {kwargs}")
    target, dtype = kwargs.get("device"), kwargs.get("dtype")
    for arg in args:
        if isinstance(arg, Tensor):
            target, dtype = arg.device, arg.dtype
        elif isinstance(arg, (str, Device)):
            target = arg
        else:
            dtype = arg
    return (None if target is None else Device(target),
            None if dtype is None else np.dtype(dtype))


# The methods above call ops through this module; the ops import Tensor, so the import
# comes last, and autograd.ops binds its functions as Tensor methods (TENSOR_METHODS).
from autograd import ops  # noqa: E402
