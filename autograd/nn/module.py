"""`Module` and `Parameter`, as in PyTorch: a module registers the parameters, buffers and
sub-modules assigned to its attributes, and can list, move (`to(device, dtype)`, `cuda()`,
`cpu()`), save and load them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from autograd.backend import Device, get_array_module, is_floating, to_device
from autograd.grad_mode import is_grad_enabled, no_grad
from autograd.hooks import RemovableHandle, add_hook, gather_gradients
from autograd.observers import observed_module_call, observers
from autograd.tensor import Tensor, _parse_to


class Parameter(Tensor):
    """A tensor that a Module registers as trainable; requires grad by default."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data.data if isinstance(data, Tensor) else data,
                         requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model. Subclasses set attributes in `__init__` and
    define `forward`; calling the module calls `forward`."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_pre_hooks", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "_backward_hooks", {})

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks or self._forward_hooks or self._backward_hooks or observers:
            if observers:  # a profiler or anomaly mode: ops see this module on the scope
                return observed_module_call(self, lambda: self._call_with_hooks(args, kwargs))
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    # ---- hooks --------------------------------------------------------------------------

    def register_forward_pre_hook(self, hook: Callable, *, prepend: bool = False
                                  ) -> RemovableHandle:
        """`hook(module, args)` before each forward; it may return replacement args (a
        tuple, or one value)."""
        return add_hook(self._forward_pre_hooks, hook, prepend)

    def register_forward_hook(self, hook: Callable, *, prepend: bool = False
                              ) -> RemovableHandle:
        """`hook(module, args, output)` after each forward; it may return a replacement
        output."""
        return add_hook(self._forward_hooks, hook, prepend)

    def register_full_backward_hook(self, hook: Callable, prepend: bool = False
                                    ) -> RemovableHandle:
        """`hook(module, grad_input, grad_output)` once the gradients with respect to the
        module's tensor inputs are computed: tuples with one entry per tensor argument
        (None where there is none) and per tensor output; it may return a replacement
        grad_input."""
        return add_hook(self._backward_hooks, hook, prepend)

    def _call_with_hooks(self, args: tuple, kwargs: dict):
        """forward with PyTorch's order: pre-hooks, forward, forward hooks, then the
        backward hooks' identities around the tensor inputs and outputs."""
        for hook in tuple(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        backward = BackwardHooks(self) if self._backward_hooks and is_grad_enabled() else None
        if backward is not None:
            args = backward.wrap_inputs(args)
        output = self.forward(*args, **kwargs)
        for hook in tuple(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output if backward is None else backward.wrap_outputs(output)

    # ---- registration -------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called")
        if isinstance(value, Parameter):
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            self._modules[name] = value
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(value)}")
            self._buffers[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to {name!r}, which "
                                "holds a parameter or module (assign a Parameter, a Module "
                                "or None)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Non-trained state (running statistics...): moved and saved with the module;
        `persistent=False` keeps it out of the state_dict."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(tensor)}")
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    # ---- traversal ----------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child}" if name else child, m)
                        for child, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def _named_members(self, table: str, prefix: str, recurse: bool):
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ---- modes and dtype ----------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data = get_array_module(p.grad.data).zeros_like(p.grad.data)

    def to(self, *args, **kwargs) -> Module:
        """`to(device)`, `to(dtype)`, `to(device, dtype)` or `to(tensor)` (its device and
        dtype), also as keywords, as PyTorch: moves parameters, buffers and gradients to the
        device and casts the floating ones to the dtype, IN PLACE (the same Parameter
        objects, so an optimizer built before keeps working; its state follows at its next
        step). Integer buffers keep their dtype."""
        target, dtype = _parse_to(args, kwargs)
        if dtype is not None and not is_floating(dtype):
            raise TypeError(f"Module.to only accepts floating point dtypes, got {dtype}")
        for tensor in (*self.parameters(), *self.buffers()):
            tensor.data = _converted(tensor.data, target, dtype)
            if tensor.grad is not None:
                tensor.grad.data = _converted(tensor.grad.data, target, dtype)
        return self

    def cuda(self, device: int | str | Device | None = None) -> Module:
        """Move to the GPU ("cuda:0", or the GPU `device` names), in place."""
        index = device if isinstance(device, int) else None
        return self.to(Device("cuda", index) if device is None or index is not None
                       else device)

    def cpu(self) -> Module:
        return self.to("cpu")

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # ---- state --------------------------------------------------------------------------

    def state_dict(self, prefix: str = "") -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name, detached (sharing memory, on
        the module's device)."""
        state: OrderedDict[str, Tensor] = OrderedDict()
        for module_name, module in self.named_modules(prefix.rstrip(".")):
            base = f"{module_name}." if module_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    state[base + name] = p.detach()
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    state[base + name] = b.detach()
        return state

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values (tensors or arrays, on any device) into this module's parameters and
        buffers, which stay where they are. With `strict`, missing or unexpected keys raise;
        a shape mismatch always raises, naming the key."""
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        problems = []
        for key, value in state_dict.items():
            if key in own:
                shape = _shape_of(value)
                if shape != own[key].shape:
                    problems.append(f"{key}: checkpoint shape {shape}, "
                                    f"model shape {own[key].shape}")
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise RuntimeError(
                f"error loading state_dict into {type(self).__name__}:\n  "
                + "\n  ".join(problems)
            )
        targets = dict(self.named_parameters())
        targets.update(self.named_buffers())
        with no_grad():
            for key, value in state_dict.items():
                if key in own:
                    targets[key].copy_(value if hasattr(value, "shape") else np.asarray(value))
        return IncompatibleKeys(missing, unexpected)

    # ---- printing -----------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        header = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return header + ")"
        return header + "\n  " + "\n  ".join(lines) + "\n)"


def _converted(array, target: Device | None, dtype: np.dtype | None):
    """`array` on `target` and, if it is floating, in `dtype` (None: unchanged)."""
    if target is not None:
        array = to_device(array, target)
    if dtype is not None and is_floating(array.dtype) and array.dtype != dtype:
        array = array.astype(dtype)
    return array


def _shape_of(value) -> tuple[int, ...]:
    """The shape of a tensor or an array (any device), or of a number or a nested list."""
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else np.shape(value)


class BackwardHooks:
    """One call's full backward hooks: the gradients of the outputs are gathered first, then
    those of the inputs, when the hooks fire (PyTorch's BackwardHook)."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.grad_outputs: tuple | None = None
        self.n_inputs = 0
        self.input_grad = False

    def wrap_inputs(self, args: tuple) -> tuple:
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        self.n_inputs = len(positions)
        wanted = [i for i in positions if args[i].requires_grad]
        if not wanted:
            return args
        self.input_grad = True
        slots = [positions.index(i) for i in wanted]

        def on_grads(grads: tuple) -> tuple:
            grad_input = [None] * self.n_inputs
            for slot, grad in zip(slots, grads):
                grad_input[slot] = grad
            replaced = self._fire(tuple(grad_input))
            return None if replaced is None else [replaced[slot] for slot in slots]

        copies = iter(gather_gradients([args[i] for i in wanted], on_grads))
        return tuple(next(copies) if i in wanted else a for i, a in enumerate(args))

    def wrap_outputs(self, output):
        outputs = output if isinstance(output, tuple) else (output,)
        wanted = [i for i, o in enumerate(outputs) if isinstance(o, Tensor) and o.requires_grad]
        if not wanted:
            return output

        def on_grads(grads: tuple) -> None:
            self.grad_outputs = grads
            if not self.input_grad:  # no input needs a gradient: fire now, as PyTorch
                self._fire((None,) * self.n_inputs)

        copies = iter(gather_gradients([outputs[i] for i in wanted], on_grads))
        wrapped = tuple(next(copies) if i in wanted else o for i, o in enumerate(outputs))
        return wrapped if isinstance(output, tuple) else wrapped[0]

    def _fire(self, grad_input: tuple) -> tuple | None:
        """Every backward hook in order; returns the final grad_input if one replaced it."""
        replaced = None
        wrap = _grads_as_tensors
        for hook in tuple(self.module._backward_hooks.values()):
            result = hook(self.module, wrap(grad_input), wrap(self.grad_outputs or ()))
            if result is not None:
                result = result if isinstance(result, tuple) else (result,)
                if len(result) != len(grad_input):
                    raise RuntimeError(f"backward hook {hook!r} returned {len(result)} "
                                       f"gradients, expected {len(grad_input)}")
                grad_input = replaced = tuple(r.data if isinstance(r, Tensor) else r
                                              for r in result)
        return replaced


def _grads_as_tensors(grads: tuple) -> tuple:
    return tuple(None if g is None else Tensor._wrap(g) for g in grads)
