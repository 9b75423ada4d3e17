"""Elementwise ops. Each backward returns the gradient at the broadcast shape; the engine sums
it back to each input's shape (see `function.sum_to_shape`). Sigmoid, SiLU, erf and erfc
have compiled fast paths (`autograd.kernels.registry`); the math here is what they compute."""

from __future__ import annotations

import math

import numpy as np

from autograd.backend import CPU, device_of, get_array_module, is_floating, to_device
from autograd.function import Function, check_same_device
from autograd.kernels import registry
from autograd.tensor import Tensor, as_array, float32

# ---- operands -----------------------------------------------------------------------------


def as_tensors(*operands) -> tuple[Tensor, ...]:
    """The operands of an arithmetic op as tensors of one dtype.

    Python numbers, NumPy scalars and NumPy arrays are constants that take the floating
    dtype of the tensor operands (so a float64 schedule value never promotes a float32
    batch) and move to their device; integer and boolean tensors are cast to it too.
    Mixing float32 and float64 tensors is an error rather than a silent promotion (and
    tensors on two devices, in `Function.apply`)."""
    float_dtypes = {x.dtype for x in operands if isinstance(x, Tensor) and is_floating(x.dtype)}
    if len(float_dtypes) > 1:
        names = " and ".join(sorted(str(d) for d in float_dtypes))
        raise TypeError(
            f"cannot mix {names} tensors in one op: cast one with .float() or .double()"
        )
    if float_dtypes:
        dtype = float_dtypes.pop()
    elif any(isinstance(x, float) or _is_float_array(x) for x in operands):
        dtype = float32
    else:
        dtype = None
    target = next((device_of(x.data) for x in operands if isinstance(x, Tensor)), None)
    tensors = []
    for x in operands:
        if isinstance(x, Tensor):
            if dtype is not None and x.dtype != dtype:
                x = Tensor._wrap(x.data.astype(dtype))
        else:
            array = as_array(x, dtype)
            x = Tensor._wrap(array if target is None else to_device(array, target))
        tensors.append(x)
    return tuple(tensors)


def _is_float_array(x) -> bool:
    return not isinstance(x, Tensor) and hasattr(x, "dtype") and is_floating(x.dtype)


# ---- arithmetic ---------------------------------------------------------------------------


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, grad):  # d(a+b) = da + db
        return grad, grad


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, grad):  # d(a-b) = da - db
        return grad, (-grad if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad):  # d(ab) = b da + a db
        a, b = self.saved
        return (
            grad * b if self.needs_input_grad[0] else None,
            grad * a if self.needs_input_grad[1] else None,
        )


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a / b

    def backward(self, grad):  # d(a/b) = da / b - a db / b^2
        a, b = self.saved
        grad_a = grad / b
        return grad_a, (-grad_a * a / b if self.needs_input_grad[1] else None)


class Pow(Function):
    def forward(self, a, b):
        out = a**b
        self.save_for_backward(a, b, out)
        return out

    def backward(self, grad):  # d(a^b) = b a^(b-1) da + a^b log(a) db
        a, b, out = self.saved
        grad_a = grad * b * a ** (b - 1) if self.needs_input_grad[0] else None
        grad_b = grad * out * get_array_module(a).log(a) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class PowScalar(Function):
    def __init__(self, exponent: float) -> None:
        self.exponent = exponent

    def forward(self, a):
        self.save_for_backward(a)
        return a**self.exponent

    def backward(self, grad):  # d(a^p) = p a^(p-1) da
        (a,) = self.saved
        return grad * (self.exponent * a ** (self.exponent - 1))


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


def add(a, b) -> Tensor:
    return Add.apply(*as_tensors(a, b))


def sub(a, b) -> Tensor:
    return Sub.apply(*as_tensors(a, b))


def mul(a, b) -> Tensor:
    return Mul.apply(*as_tensors(a, b))


def div(a, b) -> Tensor:
    return Div.apply(*as_tensors(a, b))


def pow(a, b) -> Tensor:
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return PowScalar.apply(a, exponent=b)
    return Pow.apply(*as_tensors(a, b))


def neg(a: Tensor) -> Tensor:
    return Neg.apply(a)


# ---- unary math ---------------------------------------------------------------------------


class Exp(Function):
    def forward(self, a):
        xp = get_array_module(a)
        out = xp.exp(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # d exp(a) = exp(a) da
        (out,) = self.saved
        return grad * out


class Log(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.save_for_backward(a)
        return xp.log(a)

    def backward(self, grad):  # d log(a) = da / a
        (a,) = self.saved
        return grad / a


class Sqrt(Function):
    def forward(self, a):
        xp = get_array_module(a)
        out = xp.sqrt(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # d sqrt(a) = da / (2 sqrt(a))
        (out,) = self.saved
        return grad / (2 * out)


class Abs(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.save_for_backward(a)
        return xp.abs(a)

    def backward(self, grad):  # d|a| = sign(a) da
        (a,) = self.saved
        return grad * get_array_module(a).sign(a)


class Sin(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.save_for_backward(a)
        return xp.sin(a)

    def backward(self, grad):  # d sin(a) = cos(a) da
        (a,) = self.saved
        return grad * get_array_module(a).cos(a)


class Cos(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.save_for_backward(a)
        return xp.cos(a)

    def backward(self, grad):  # d cos(a) = -sin(a) da
        (a,) = self.saved
        return -grad * get_array_module(a).sin(a)


class Clamp(Function):
    def __init__(self, min=None, max=None) -> None:
        self.min, self.max = min, max

    def forward(self, a):
        xp = get_array_module(a)
        self.save_for_backward(a)
        return xp.clip(a, self.min, self.max).astype(a.dtype, copy=False)

    def backward(self, grad):  # gradient passes where min <= a <= max (PyTorch's rule)
        (a,) = self.saved
        inside = get_array_module(a).ones(a.shape, dtype=bool)
        if self.min is not None:
            inside &= a >= self.min
        if self.max is not None:
            inside &= a <= self.max
        return grad * inside


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


_erf_host = np.vectorize(math.erf, otypes=[np.float64])
_erfc_host = np.vectorize(math.erfc, otypes=[np.float64])


def _on_host(function, a):
    """function(a) in a's dtype, computed on the host and moved back to a's device: NumPy
    and CuPy have no erf, so the math is Python's math.erf per element."""
    return to_device(function(to_device(a, CPU)).astype(a.dtype, copy=False), device_of(a))


def erf_array(a):
    """erf of an array, elementwise, in its dtype."""
    fast = registry.lookup("erf", a)
    return fast(a) if fast is not None else _on_host(_erf_host, a)


def erfc_array(a):
    """erfc = 1 - erf of an array, elementwise, accurate where erf is near 1."""
    fast = registry.lookup("erfc", a)
    return fast(a) if fast is not None else _on_host(_erfc_host, a)


def sigmoid_array(a):
    """1 / (1 + exp(-a)), elementwise: exp(-a) = inf gives 0, the limit (never NaN)."""
    fast = registry.lookup("sigmoid", a)
    if fast is not None:
        return fast(a)
    with np.errstate(over="ignore"):
        return 1 / (1 + get_array_module(a).exp(-a))


class Erf(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return erf_array(a)

    def backward(self, grad):  # d erf(a) = 2 / sqrt(pi) exp(-a^2) da
        (a,) = self.saved
        return grad * (_TWO_OVER_SQRT_PI * get_array_module(a).exp(-a * a))


class Erfc(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return erfc_array(a)

    def backward(self, grad):  # d erfc(a) = -2 / sqrt(pi) exp(-a^2) da
        (a,) = self.saved
        return grad * (-_TWO_OVER_SQRT_PI * get_array_module(a).exp(-a * a))


def exp(a: Tensor) -> Tensor:
    return Exp.apply(a)


def log(a: Tensor) -> Tensor:
    return Log.apply(a)


def erf(a: Tensor) -> Tensor:
    return Erf.apply(a)


def erfc(a: Tensor) -> Tensor:
    return Erfc.apply(a)


def sqrt(a: Tensor) -> Tensor:
    return Sqrt.apply(a)


def rsqrt(a: Tensor) -> Tensor:
    return PowScalar.apply(a, exponent=-0.5)


def square(a: Tensor) -> Tensor:
    return PowScalar.apply(a, exponent=2)


def abs(a: Tensor) -> Tensor:
    return Abs.apply(a)


def sin(a: Tensor) -> Tensor:
    return Sin.apply(a)


def cos(a: Tensor) -> Tensor:
    return Cos.apply(a)


def clamp(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clamp needs at least one of min and max")
    return Clamp.apply(a, min=min, max=max)


clip = clamp


# ---- activations --------------------------------------------------------------------------


class Tanh(Function):
    def forward(self, a):
        xp = get_array_module(a)
        out = xp.tanh(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # d tanh(a) = (1 - tanh^2) da
        (out,) = self.saved
        return grad * (1 - out * out)


class Sigmoid(Function):
    def forward(self, a):
        out = sigmoid_array(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # d s(a) = s (1 - s) da
        (out,) = self.saved
        return grad * out * (1 - out)


class ReLU(Function):
    def forward(self, a):
        xp = get_array_module(a)
        out = xp.maximum(a, 0)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # d relu(a) = [a > 0] da
        (out,) = self.saved
        return grad * (out > 0)


class SiLU(Function):
    def forward(self, a):
        self.save_for_backward(a)
        fast = registry.lookup("silu", a)
        return fast(a) if fast is not None else a * sigmoid_array(a)  # a s(a)

    def backward(self, grad):  # d (a s(a)) = s (1 + a (1 - s)) da
        (a,) = self.saved
        grad = grad.astype(a.dtype, copy=False)
        fast = registry.lookup("silu_backward", a, grad)
        if fast is not None:
            return fast(a, grad)
        s = sigmoid_array(a)
        return grad * s * (1 + a * (1 - s))


_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GELU(Function):
    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, a):
        self.save_for_backward(a)
        if self.approximate == "tanh":  # 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))
            return 0.5 * a * (1 + get_array_module(a).tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a**3)))
        return 0.5 * a * (1 + erf_array(a / _SQRT_2))  # a Phi(a)

    def backward(self, grad):
        (a,) = self.saved
        xp = get_array_module(a)
        if self.approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (a + 0.044715 * a**3)
            t = xp.tanh(inner)
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * a * a)
            return grad * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * d_inner)
        cdf = 0.5 * (1 + erf_array(a / _SQRT_2))
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * a * a)
        return grad * (cdf + a * pdf)  # d (a Phi(a)) = (Phi(a) + a phi(a)) da


def tanh(a: Tensor) -> Tensor:
    return Tanh.apply(a)


def sigmoid(a: Tensor) -> Tensor:
    return Sigmoid.apply(a)


def relu(a: Tensor) -> Tensor:
    return ReLU.apply(a)


def silu(a: Tensor) -> Tensor:
    return SiLU.apply(a)


def gelu(a: Tensor, approximate: str = "none") -> Tensor:
    return GELU.apply(a, approximate=approximate)


# ---- selection ----------------------------------------------------------------------------


class Maximum(Function):
    """Elementwise maximum. Subgradient at ties (PyTorch's): each input gets half."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return get_array_module(a).maximum(a, b)

    def backward(self, grad):  # to the larger input; ties split the gradient (PyTorch's rule)
        a, b = self.saved
        return _split_at_ties(grad, a > b, a == b, self.needs_input_grad)


class Minimum(Function):
    """Elementwise minimum. Subgradient at ties (PyTorch's): each input gets half."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return get_array_module(a).minimum(a, b)

    def backward(self, grad):  # to the smaller input; ties split the gradient
        a, b = self.saved
        return _split_at_ties(grad, a < b, a == b, self.needs_input_grad)


def _split_at_ties(grad, a_wins, tie, needs_input_grad):
    share = get_array_module(grad).where(tie, 0.5, 1.0).astype(grad.dtype)
    grad_a = grad * share * (a_wins | tie) if needs_input_grad[0] else None
    grad_b = grad * share * (~a_wins | tie) if needs_input_grad[1] else None
    return grad_a, grad_b


class Where(Function):
    def __init__(self, condition) -> None:
        self.condition = condition

    def forward(self, a, b):
        return get_array_module(a).where(self.condition, a, b)

    def backward(self, grad):  # gradient goes to the chosen input
        xp = get_array_module(grad)
        zero = xp.zeros((), dtype=grad.dtype)
        return (
            xp.where(self.condition, grad, zero) if self.needs_input_grad[0] else None,
            xp.where(self.condition, zero, grad) if self.needs_input_grad[1] else None,
        )


def maximum(a, b) -> Tensor:
    return Maximum.apply(*as_tensors(a, b))


def minimum(a, b) -> Tensor:
    return Minimum.apply(*as_tensors(a, b))


def where(condition, input, other) -> Tensor:
    """input where condition is True, else other (condition broadcasts, as in PyTorch)."""
    condition = as_array(condition, None)
    if condition.dtype != np.bool_:
        raise TypeError(f"where() needs a boolean condition, got dtype {condition.dtype}")
    input, other = as_tensors(input, other)
    return Where.apply(input, other, condition=to_device(condition, input.device))


# ---- dtype and copies ---------------------------------------------------------------------


class Cast(Function):
    def __init__(self, dtype) -> None:
        self.dtype = np.dtype(dtype)

    def forward(self, a):
        return a.astype(self.dtype)

    def backward(self, grad):  # identity; the engine casts it back to the input's dtype
        return grad


class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        return grad


class MoveTo(Function):
    def __init__(self, source, target) -> None:
        self.source, self.target = source, target

    def forward(self, a):
        return to_device(a, self.target)

    def backward(self, grad):  # identity, moved back to the input's device
        return to_device(grad, self.source)


def cast(a: Tensor, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    if dtype == a.dtype:
        return a
    if a.requires_grad and not is_floating(dtype):
        return Tensor._wrap(a.data.astype(dtype))  # integer results leave the graph
    return Cast.apply(a, dtype=dtype)


def clone(a: Tensor) -> Tensor:
    return Clone.apply(a)


def move_to(a: Tensor, device) -> Tensor:
    """`a` on `device` (differentiable: the gradient moves back); `a` itself if it is
    there already. Tensor.to(device) calls this."""
    return a if a.device == device else MoveTo.apply(a, source=a.device, target=device)


# ---- comparisons and logic: boolean results outside the graph -----------------------------


def _compare(name: str):
    def compare(a, b) -> Tensor:
        a, b = as_tensors(a, b)
        check_same_device(name, (a.data, b.data))
        return Tensor._wrap(getattr(get_array_module(a.data), name)(a.data, b.data))

    compare.__name__ = name
    compare.__doc__ = f"Elementwise {name}, a boolean tensor without gradient."
    return compare


def _test(name: str):
    def test(a: Tensor) -> Tensor:
        return Tensor._wrap(getattr(get_array_module(a.data), name)(a.data))

    test.__name__ = name
    test.__doc__ = f"Elementwise {name}, a boolean tensor without gradient."
    return test


lt = _compare("less")
le = _compare("less_equal")
gt = _compare("greater")
ge = _compare("greater_equal")
eq = _compare("equal")
ne = _compare("not_equal")
logical_and = _compare("logical_and")
logical_or = _compare("logical_or")
logical_not = _test("logical_not")
isfinite = _test("isfinite")
isnan = _test("isnan")
