"""A stand-in for CuPy that computes with NumPy, so that the library's "cuda" code paths run
(and are tested) on a machine without a GPU.

`simulated_cuda()` installs it as autograd's CuPy for the duration of a `with` block.
Tensors made on "cuda" inside hold this module's `ndarray`, which behaves as strictly as a
CuPy array, or more:

- it is not a NumPy array: NumPy functions and ufuncs on it raise, as does `np.asarray`
  (use the array module, `xp = get_array_module(x)`), and mixing it with a NumPy array in
  an operator, an index or a function raises;
- only names that CuPy 14.2 has exist (`tests/cupy_api.json`, read from `dir(cupy)`), and a
  keyword argument that CuPy's signature lacks raises;
- reductions return 0-d arrays, as CuPy's do; every device-to-host transfer (`get`,
  `asnumpy`, `item`, `tolist`, `float()`, `bool()`...) and every host-to-device copy is
  counted in `transfers`.

What it cannot check: the CUDA kernels themselves (the kernel registry has no fast path
for its arrays, so the ops run their own math, as with AUTOGRAD_REFERENCE_KERNELS=1; the
CUDA emulator of tests/cuda_emulator.py enables them),
speed, and CuPy's own numerical differences. Those need a GPU (tests marked `cuda`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np

API = json.loads((Path(__file__).with_name("cupy_api.json")).read_text())
FUNCTIONS: dict = API["functions"]
UFUNCS = set(API["ufuncs"])
METHODS: dict = API["ndarray"]
__version__ = API["cupy_version"] + "+simulated"

transfers: Counter = Counter()  # "to_host" and "to_device" copies since the last reset
_CREATORS = {"asarray", "array", "asanyarray", "ascontiguousarray"}  # accept host data


class HostArrayError(TypeError):
    """A NumPy array met a (simulated) device array."""


def _unwrap(value, where: str):
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, np.ndarray):
        raise HostArrayError(f"{where}: got a NumPy array where CuPy needs a device array "
                             "(move it with cupy.asarray / autograd.backend.to_device)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, where) for k, v in value.items()}
    return value


def _wrap(value, originals: dict | None = None):
    """NumPy results as device arrays; an input array handed back unchanged (asarray,
    astype(copy=False)...) as the very same device array, as CuPy does."""
    if isinstance(value, np.ndarray):
        if originals and id(value) in originals:
            return originals[id(value)]
        return ndarray(value)
    if isinstance(value, np.generic):
        return ndarray(np.asarray(value))  # CuPy's reductions give 0-d arrays
    if isinstance(value, tuple):
        return tuple(_wrap(v, originals) for v in value)
    if isinstance(value, list):
        return [_wrap(v, originals) for v in value]
    return value


def _device_arrays(values) -> dict:
    found = {}
    for v in values:
        if isinstance(v, ndarray):
            found[id(v._array)] = v
        elif isinstance(v, (list, tuple)):
            found.update(_device_arrays(v))
    return found


def _check_keywords(name: str, params, kwargs: dict) -> None:
    if params in (None, "attribute") or "**" in params:
        return
    unknown = set(kwargs) - set(params)
    if unknown:
        raise TypeError(f"cupy {name}() has no keyword argument(s) {sorted(unknown)} "
                        f"(CuPy {API['cupy_version']} takes {params})")


def _call(name: str, function, params, args, kwargs, host_ok: bool = False, owner=None):
    _check_keywords(name, params, kwargs)
    originals = _device_arrays([*args, *kwargs.values(), owner])
    if host_ok and args and isinstance(args[0], (np.ndarray, np.generic, list, tuple, int,
                                                 float, bool)):
        transfers["to_device"] += 1
        args = (np.array(args[0]),) + tuple(args[1:])  # a device copy, never shared memory
    else:
        args = _unwrap(args, f"cupy.{name}")
    kwargs = _unwrap(kwargs, f"cupy.{name}")
    return _wrap(function(*args, **kwargs), originals)


class _Device:
    """cupy.cuda.Device: one simulated GPU, number 0."""

    def __init__(self, device=None) -> None:
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"simulated CuPy has one device, got {self.id}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def synchronize(self) -> None:
        pass


class ndarray:  # noqa: N801 (CuPy's name)
    """A simulated device array: a NumPy array that refuses to be treated as one."""

    __slots__ = ("_array", "__weakref__")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, array: np.ndarray) -> None:
        object.__setattr__(self, "_array", array)

    # ---- NumPy must not touch it --------------------------------------------------------

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # A NumPy scalar's operator (np.float32(2) * x) reaches here; CuPy computes it on
        # the device (its arrays implement __array_ufunc__), and so does this stand-in.
        # Any other NumPy ufunc on a device array is refused, to keep the code xp-clean.
        scalar_operand = any(isinstance(v, np.generic) for v in inputs)
        if method == "__call__" and scalar_operand and not kwargs and ufunc.nin == 2:
            return _Ufunc(ufunc.__name__)(*inputs)
        raise HostArrayError(f"numpy.{ufunc.__name__} called on a device array: use the "
                             "array module (xp = get_array_module(x))")

    def __array_function__(self, function, types, args, kwargs):
        raise HostArrayError(f"numpy.{function.__name__} called on a device array: use the "
                             "array module (xp = get_array_module(x))")

    # ---- attributes and methods ---------------------------------------------------------

    @property
    def device(self) -> _Device:
        return _Device(0)

    @property
    def T(self) -> ndarray:
        return ndarray(self._array.T)

    def __getattr__(self, name: str):
        if name not in METHODS or name in ("data", "ctypes", "device", "T"):
            raise AttributeError(f"cupy.ndarray has no attribute {name!r}")
        value = getattr(self._array, name)
        if METHODS[name] == "attribute":
            return _wrap(value)

        def method(*args, **kwargs):
            return _call(f"ndarray.{name}", value, METHODS[name], args, kwargs, owner=self)

        return method

    def __setattr__(self, name: str, value) -> None:
        if name != "shape":
            raise AttributeError(f"cannot set {name!r} of a cupy.ndarray")
        self._array.shape = value

    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        transfers["to_host"] += 1
        return self._array.copy()

    def set(self, array: np.ndarray, stream=None) -> None:
        transfers["to_device"] += 1
        self._array[...] = array

    def __repr__(self) -> str:
        transfers["to_host"] += 1
        return "array(" + np.array2string(self._array, separator=", ") + ", device='sim')"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self._array)

    def __iter__(self):
        return (ndarray(np.asarray(row)) for row in self._array)

    def __getitem__(self, key):
        return _wrap(self._array[_unwrap(key, "cupy.ndarray indexing")])

    def __setitem__(self, key, value) -> None:
        self._array[_unwrap(key, "cupy.ndarray indexing")] = _unwrap(
            value, "cupy.ndarray assignment")

    def __copy__(self) -> ndarray:
        return ndarray(self._array.copy())

    def __deepcopy__(self, memo) -> ndarray:
        return ndarray(self._array.copy())


def _read_on_host(convert):
    """A method that reads the array on the host: one device-to-host transfer."""
    def method(self):
        transfers["to_host"] += 1
        return convert(self._array)

    return method


for _name, _convert in (("item", np.ndarray.item), ("tolist", np.ndarray.tolist),
                        ("__float__", float), ("__int__", int), ("__bool__", bool),
                        ("__complex__", complex)):
    setattr(ndarray, _name, _read_on_host(_convert))


def _operator(name: str, inplace: bool = False):
    def method(self, other=None):
        operand = _unwrap(other, f"cupy.ndarray.{name}")
        if inplace:
            getattr(self._array, name)(operand)
            return self
        return _wrap(getattr(self._array, name)(operand))

    method.__name__ = name
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and",
              "or", "xor", "lshift", "rshift"):
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _operator(f"__r{_name}__"))
    setattr(ndarray, f"__i{_name}__", _operator(f"__i{_name}__", inplace=True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", lambda self, _n=_name: _wrap(
        getattr(self._array, f"__{_n}__")()))


class _Ufunc:
    """A CuPy ufunc: calls take `out`, `dtype` and `casting` as keywords (CuPy's
    _kernel.pyx pops exactly these); `at` and `reduce` exist."""

    def __init__(self, name: str) -> None:
        self.name, self._ufunc = name, getattr(np, name)
        self.nin, self.nout = self._ufunc.nin, self._ufunc.nout

    def __call__(self, *args, **kwargs):
        return _call(self.name, self._ufunc, ["out", "dtype", "casting"], args, kwargs)

    def at(self, a, indices, b=None) -> None:
        args = (a, indices) if b is None else (a, indices, b)
        self._ufunc.at(*_unwrap(args, f"cupy.{self.name}.at"))

    def reduce(self, *args, **kwargs):
        return _call(f"{self.name}.reduce", self._ufunc.reduce, None, args, kwargs)


def asnumpy(a, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def __getattr__(name: str):
    if name in UFUNCS:
        return _Ufunc(name)
    if name not in FUNCTIONS or not hasattr(np, name):
        why = "lacks it" if name not in FUNCTIONS else "has it, but NumPy does not"
        raise AttributeError(f"simulated cupy has no attribute {name!r} (CuPy "
                             f"{API['cupy_version']} {why})")
    value = getattr(np, name)
    if FUNCTIONS[name] == "attribute" or not callable(value):
        return value

    def function(*args, **kwargs):
        return _call(name, value, FUNCTIONS[name], args, kwargs, host_ok=name in _CREATORS)

    function.__name__ = name
    return function


# ---- namespaces: cupy.cuda, cupy.lib.stride_tricks ----------------------------------------

cuda = types.SimpleNamespace(
    Device=_Device,
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    is_available=lambda: True,
    get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
)
lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
    as_strided=lambda x, shape=None, strides=None: ndarray(
        np.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape, strides)),
))


@contextlib.contextmanager
def simulated_cuda():
    """Within the block, autograd's device "cuda" is this simulated CuPy; yields the module
    (its `transfers` counter reset)."""
    from autograd import backend

    saved = backend._cupy, backend._cupy_problem
    module = sys.modules[__name__]
    backend._cupy, backend._cupy_problem = module, None
    transfers.clear()
    try:
        yield module
    finally:
        backend._cupy, backend._cupy_problem = saved
