"""Hypothesis-driven gradient checks of every op against central finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from op_testing import arrays, broadcastable_shapes, check_op, shapes

import autograd
from autograd import ops

# ---- elementwise, binary, with broadcasting -----------------------------------------------

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "maximum": autograd.maximum,
    "minimum": autograd.minimum,
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data(), shape_pair=broadcastable_shapes(2))
def test_binary_ops(name, data, shape_pair):
    a = data.draw(arrays(shape_pair[0]))
    b = data.draw(arrays(shape_pair[1], away_from=0.0, margin=0.3))
    if name in ("maximum", "minimum"):
        assume(np.min(np.abs(np.subtract(a, b))) > 1e-3)  # away from ties (a kink)
    check_op(BINARY[name], a, b)


@given(data=st.data(), shape_pair=broadcastable_shapes(2))
def test_pow_tensor_exponent(data, shape_pair):
    base = data.draw(arrays(shape_pair[0], low=0.2, high=3.0))
    exponent = data.draw(arrays(shape_pair[1], low=-2.0, high=2.0))
    check_op(lambda a, b: a**b, base, exponent)


@given(data=st.data(), shape=shapes, exponent=st.sampled_from([2, 3, -1, 0.5, -1.5]))
def test_pow_scalar_exponent(data, shape, exponent):
    base = data.draw(arrays(shape, low=0.2, high=3.0))
    check_op(lambda a: a**exponent, base)


@given(data=st.data(), shape=shapes)
def test_scalar_base_pow_and_reflected_ops(data, shape):
    x = data.draw(arrays(shape, away_from=0.0, margin=0.3))
    check_op(lambda a: 2.0**a + (3.0 - a) * (1.5 / a) - (-a), x)


@given(data=st.data(), shape_triple=broadcastable_shapes(3))
def test_where(data, shape_triple):
    condition = data.draw(arrays(shape_triple[0])) > 0
    a, b = data.draw(arrays(shape_triple[1])), data.draw(arrays(shape_triple[2]))
    check_op(lambda x, y: autograd.where(condition, x, y), a, b)


# ---- elementwise, unary -------------------------------------------------------------------

UNARY = {
    # name: (function, low, high, kinks)
    "exp": (lambda x: x.exp(), -3, 3, None),
    "log": (lambda x: x.log(), 0.1, 5, None),
    "sqrt": (lambda x: x.sqrt(), 0.1, 5, None),
    "rsqrt": (lambda x: x.rsqrt(), 0.1, 5, None),
    "square": (lambda x: x.square(), -3, 3, None),
    "neg": (lambda x: -x, -3, 3, None),
    "abs": (lambda x: x.abs(), -3, 3, 0.0),
    "sin": (lambda x: x.sin(), -3, 3, None),
    "cos": (lambda x: x.cos(), -3, 3, None),
    "tanh": (lambda x: x.tanh(), -3, 3, None),
    "sigmoid": (lambda x: x.sigmoid(), -8, 8, None),
    "relu": (lambda x: x.relu(), -3, 3, 0.0),
    "silu": (lambda x: x.silu(), -6, 6, None),
    "gelu": (lambda x: x.gelu(), -5, 5, None),
    "erf": (lambda x: x.erf(), -4, 4, None),
    "erfc": (lambda x: x.erfc(), -4, 4, None),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), -5, 5, None),
    "clamp": (lambda x: x.clamp(-1.0, 0.5), -3, 3, [-1.0, 0.5]),
    "clamp_min": (lambda x: x.clamp(min=0.25), -3, 3, 0.25),
    "clone": (lambda x: x.clone(), -3, 3, None),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data(), shape=shapes)
def test_unary_ops(name, data, shape):
    fn, low, high, kinks = UNARY[name]
    x = data.draw(arrays(shape, low=low, high=high, away_from=kinks, margin=1e-2))
    check_op(fn, x)


def test_cast_passes_gradient_back_in_the_input_dtype():
    x = autograd.tensor([0.1, 0.2, 0.3], dtype=np.float64, requires_grad=True)
    y = x.float()
    assert y.dtype == np.float32
    (y * autograd.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])


# ---- matmul -------------------------------------------------------------------------------


@given(data=st.data(), batch=broadcastable_shapes(2, max_dims=2),
       n=st.integers(1, 4), k=st.integers(1, 4), m=st.integers(1, 4))
def test_matmul_batched_broadcast(data, batch, n, k, m):
    a = data.draw(arrays(batch[0] + (n, k)))
    b = data.draw(arrays(batch[1] + (k, m)))
    check_op(lambda x, y: x @ y, a, b)


@given(data=st.data(), k=st.integers(1, 4), m=st.integers(1, 4))
def test_matmul_vectors(data, k, m):
    v, w = data.draw(arrays((k,))), data.draw(arrays((k,)))
    matrix = data.draw(arrays((k, m)))
    check_op(lambda x, y: x @ y, v, w)
    check_op(lambda x, y: x @ y, v, matrix)
    check_op(lambda x, y: x @ y, matrix.T.copy(), v)


# ---- reductions ---------------------------------------------------------------------------


@st.composite
def shape_and_dims(draw, min_dims=1):
    shape = draw(hnp_shapes(min_dims))
    dims = draw(st.one_of(
        st.none(),
        st.integers(-len(shape), len(shape) - 1),
        st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                 unique=True).map(tuple),
    ))
    return shape, dims


def hnp_shapes(min_dims):
    from hypothesis.extra import numpy as hnp

    return hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4)


REDUCTIONS = {
    "sum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "mean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "var": lambda x, d, k: x.var(dim=d, keepdim=k, correction=0),
    "var_unbiased": lambda x, d, k: x.var(dim=d, keepdim=k),
    "std": lambda x, d, k: x.std(dim=d, keepdim=k, correction=0),
    "std_unbiased": lambda x, d, k: x.std(dim=d, keepdim=k, correction=1),
    "amax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "amin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "logsumexp": lambda x, d, k: x.logsumexp(dim=d, keepdim=k),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data(), case=shape_and_dims(), keepdim=st.booleans())
def test_reductions(name, data, case, keepdim):
    shape, dims = case
    x = data.draw(arrays(shape))
    reduced = np.prod([shape[d] for d in (range(len(shape)) if dims is None else
                                          np.atleast_1d(dims))])
    if name in ("amax", "amin", "std", "std_unbiased"):
        flat_dims = tuple(range(len(shape))) if dims is None else dims
        spread = np.sort(x, axis=None)
        assume(np.min(np.diff(spread), initial=1.0) > 1e-3 or x.size == 1)  # no ties
        if name.startswith("std"):
            assume(np.min(np.var(x, axis=flat_dims)) > 1e-3)  # sqrt is smooth away from 0
    if name in ("var_unbiased", "std_unbiased"):
        assume(reduced > 1)
    check_op(lambda t: REDUCTIONS[name](t, dims, keepdim), x)


@given(data=st.data(), case=shape_and_dims(), keepdim=st.booleans(),
       largest=st.booleans())
def test_max_min_with_dim(data, case, keepdim, largest):
    shape, dims = case
    dim = 0 if dims is None or isinstance(dims, tuple) else dims
    x = data.draw(arrays(shape))
    assume(np.min(np.diff(np.sort(x, axis=None)), initial=1.0) > 1e-6)

    def fn(t):
        result = t.max(dim, keepdim) if largest else t.min(dim, keepdim)
        return result.values

    check_op(fn, x)
    result = autograd.Tensor(x).max(dim, keepdim) if largest else \
        autograd.Tensor(x).min(dim, keepdim)
    pick = np.argmax if largest else np.argmin
    np.testing.assert_array_equal(result.indices.numpy(), pick(x, axis=dim, keepdims=keepdim))


# ---- shape ops ----------------------------------------------------------------------------


@given(data=st.data(), shape=hnp_shapes(1))
def test_reshape_flatten_squeeze_unsqueeze(data, shape):
    x = data.draw(arrays(shape))
    check_op(lambda t: t.reshape(-1) * 2, x)
    check_op(lambda t: t.flatten(), x)
    check_op(lambda t: t.unsqueeze(0).unsqueeze(-1).squeeze(), x)
    check_op(lambda t: t.view(tuple(reversed(shape))), x)


@given(data=st.data(), shape=hnp_shapes(2))
def test_permute_transpose_T(data, shape):
    x = data.draw(arrays(shape))
    order = data.draw(st.permutations(range(len(shape))))
    check_op(lambda t: t.permute(*order) * 1.0, x)
    check_op(lambda t: t.transpose(0, -1), x)
    check_op(lambda t: t.T, x)


@given(data=st.data(), shape_pair=broadcastable_shapes(2))
def test_expand_and_broadcast_to(data, shape_pair):
    target = np.broadcast_shapes(*shape_pair)
    x = data.draw(arrays(shape_pair[0]))
    check_op(lambda t: t.broadcast_to(target), x)
    check_op(lambda t: t.expand(*((-1,) * 0 + target)), x)


@given(data=st.data(), shape=hnp_shapes(1), count=st.integers(1, 3), dim=st.integers(0, 2))
def test_cat_and_stack(data, shape, count, dim):
    dim = dim % len(shape)
    xs = []
    for _ in range(count):
        own = list(shape)
        own[dim] = data.draw(st.integers(1, 3))
        xs.append(data.draw(arrays(tuple(own))))
    check_op(lambda *ts: autograd.cat(ts, dim=dim), *xs)
    same = [data.draw(arrays(shape)) for _ in range(count)]
    check_op(lambda *ts: autograd.stack(ts, dim=dim), *same)


@given(data=st.data(), shape=hnp_shapes(1), size=st.integers(1, 3))
def test_split_and_chunk(data, shape, size):
    x = data.draw(arrays(shape))
    check_op(lambda t: tuple(p * (i + 1) for i, p in enumerate(t.split(size, dim=0))), x)
    check_op(lambda t: tuple(p * (i + 1) for i, p in enumerate(t.chunk(size, dim=-1))), x)


@given(data=st.data(), shape=hnp_shapes(1), pads=st.lists(st.integers(0, 2), min_size=2,
                                                         max_size=4))
def test_pad(data, shape, pads):
    pads = pads[: 2 * (len(pads) // 2)][: 2 * len(shape)]
    x = data.draw(arrays(shape))
    check_op(lambda t: ops.pad(t, tuple(pads), value=0.5), x)


@given(data=st.data(), shape=hnp_shapes(2))
def test_getitem_basic(data, shape):
    x = data.draw(arrays(shape))
    start = data.draw(st.integers(0, shape[0] - 1))
    check_op(lambda t: t[start:, ..., ::2], x)
    check_op(lambda t: t[start], x)
    check_op(lambda t: t[None, :, -1], x)


@given(data=st.data(), shape=hnp_shapes(1))
def test_getitem_integer_array_repeats_add_up(data, shape):
    x = data.draw(arrays(shape))
    index = data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1,
                               max_size=6))
    check_op(lambda t: t[np.array(index)], x)
    check_op(lambda t: t[autograd.tensor(index, dtype=np.int64)] * 2, x)


@given(data=st.data(), shape=hnp_shapes(1))
def test_getitem_boolean_mask(data, shape):
    x = data.draw(arrays(shape))
    mask = data.draw(arrays(shape)) > 0
    check_op(lambda t: t[mask], x)
    check_op(lambda t: t[mask[:, ...].any(axis=tuple(range(1, len(shape))))
                         if len(shape) > 1 else mask], x)


@given(data=st.data(), shape=hnp_shapes(2))
def test_gather(data, shape):
    x = data.draw(arrays(shape))
    dim = data.draw(st.integers(0, len(shape) - 1))
    index_shape = list(shape)
    index_shape[dim] = data.draw(st.integers(1, 5))
    index = data.draw(st.lists(st.integers(0, shape[dim] - 1), min_size=int(np.prod(
        index_shape)), max_size=int(np.prod(index_shape))))
    index = np.array(index, dtype=np.int64).reshape(index_shape)
    check_op(lambda t: t.gather(dim, index), x)


# ---- composites: losses -------------------------------------------------------------------


@given(data=st.data(), n=st.integers(1, 4), classes=st.integers(2, 5),
       smoothing=st.sampled_from([0.0, 0.1, 0.3]), reduction=st.sampled_from(
           ["mean", "sum", "none"]))
def test_cross_entropy(data, n, classes, smoothing, reduction):
    F = autograd.nn.functional
    logits = data.draw(arrays((n, classes)))
    labels = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=n,
                                         max_size=n)))
    check_op(lambda t: F.cross_entropy(t, labels, label_smoothing=smoothing,
                                       reduction=reduction), logits)
    probs = data.draw(arrays((n, classes), low=0.0, high=1.0))
    check_op(lambda t: F.cross_entropy(t, probs, label_smoothing=smoothing,
                                       reduction=reduction), logits)


@given(data=st.data(), shape=shapes)
def test_mse_loss(data, shape):
    F = autograd.nn.functional
    a, b = data.draw(arrays(shape)), data.draw(arrays(shape))
    check_op(lambda x, y: F.mse_loss(x, y), a, b)


@given(data=st.data(), n=st.integers(1, 4), features=st.integers(1, 4), out=st.integers(1, 3))
def test_linear(data, n, features, out):
    F = autograd.nn.functional
    x, w, b = (data.draw(arrays(s)) for s in [(n, features), (out, features), (out,)])
    check_op(F.linear, x, w, b)


@given(data=st.data(), channels=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       mixed=st.booleans())
def test_cat_of_channels_last_images_stays_channels_last(data, channels, mixed):
    n, h, w = (data.draw(st.integers(1, 3)) for _ in range(3))
    xs = [np.ascontiguousarray(data.draw(arrays((n, h, w, c)))).transpose(0, 3, 1, 2)
          for c in channels]
    if mixed:  # one NCHW input: the plain concatenation
        xs[0] = np.ascontiguousarray(xs[0])
    out = autograd.cat([autograd.Tensor(x) for x in xs], dim=1).numpy()
    np.testing.assert_array_equal(out, np.concatenate(xs, axis=1))
    if not mixed:
        assert out.transpose(0, 2, 3, 1).flags.c_contiguous
    check_op(lambda *ts: autograd.cat(ts, dim=1), *xs)


# ---- casts and moves, class losses with weights and ignored targets -------------------------


@given(data=st.data(), shape=shapes)
def test_moves_and_casts_on_the_cpu_pass_gradients_through(data, shape):
    x = data.draw(arrays(shape))
    check_op(lambda t: t.to("cpu") * t.to(dtype=autograd.float64).cpu() + t.double(), x,
             device_legs=False)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@given(data=st.data(), batch=st.integers(1, 5), classes=st.integers(2, 5),
       smoothing=st.sampled_from([0.0, 0.2]), reduction=st.sampled_from(["mean", "sum"]))
def test_class_losses_with_weight_and_ignore_index(loss, data, batch, classes, smoothing,
                                                   reduction):
    logits = data.draw(arrays((batch, classes)))
    target = np.array(data.draw(st.lists(st.integers(-1, classes - 1), min_size=batch,
                                         max_size=batch)))
    assume((target >= 0).any())  # the mean over no kept target is 0/0
    weight = autograd.tensor(data.draw(arrays((classes,), low=0.5, high=2.0)))
    F = autograd.nn.functional
    if loss == "cross_entropy":
        def fn(t):
            return F.cross_entropy(t, target, weight=weight, ignore_index=-1,
                                   reduction=reduction, label_smoothing=smoothing)
    else:
        assume(smoothing == 0.0)

        def fn(t):
            return F.nll_loss(t.log_softmax(dim=1), target, weight=weight, ignore_index=-1,
                              reduction=reduction)
    check_op(fn, logits, device_legs=False)
    # the value itself, written out: weighted (smoothed) NLL over the kept targets
    log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    kept = target >= 0
    w = weight.numpy()
    rows = -(1 - smoothing) * log_p[kept, target[kept]] * w[target[kept]] \
        - smoothing / classes * (log_p[kept] * w).sum(1)
    expected = rows.sum() / (w[target[kept]].sum() if reduction == "mean" else 1.0)
    np.testing.assert_allclose(fn(autograd.tensor(logits)).item(), expected, rtol=1e-10)
