"""The norm family: group_norm (and group_norm_silu), layer_norm, batch_norm and their
modules. Values against the textbook formula and against PyTorch, float64 gradient checks
(each with check_op's simulated-CuPy leg), running statistics, errors for bad input; the
fused kernels registered beneath them (numba; the CUDA sources of kernels/cuda/norm.cu on a
real GPU or emulated) against the ops' own math; and the device legs of the ops (cpu,
cuda-sim, cuda, cuda-emulated) against the CPU's reference kernels.

The kernels: autograd/kernels/norm.py and autograd/kernels/cuda/norm.cu."""

from __future__ import annotations

import numpy as np
import pytest
from device_testing import CHANNELS_LAST, DTYPES, check_on_device, normal
from hypothesis import given
from hypothesis import strategies as st
from kernel_testing import assert_fast_path_matches_math, forward_backward, on
from module_testing import check_module
from op_testing import arrays, check_op, check_torch_case

import autograd
from autograd import nn
from autograd.backend import to_device
from autograd.kernels import norm as norm_kernels
from autograd.kernels import registry
from autograd.nn import functional as F
from autograd.tensor import Tensor


def normalized(x: np.ndarray, axes: tuple[int, ...], eps: float = 1e-5) -> np.ndarray:
    """(x - mean) / sqrt(biased var + eps) over `axes`: the definition, written directly."""
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)


@st.composite
def grouped_shapes(draw, max_spatial_dims=2):
    """(N, C, *spatial) and a number of groups that divides C."""
    groups, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 3), max_size=max_spatial_dims))
    return (draw(st.integers(1, 3)), groups * per_group, *spatial), groups


# ---- group_norm ---------------------------------------------------------------------------


@given(data=st.data(), case=grouped_shapes())
def test_group_norm_matches_definition_and_gradcheck(data, case):
    shape, groups = case
    x = data.draw(arrays(shape))
    weight, bias = data.draw(arrays(shape[1:2])), data.draw(arrays(shape[1:2]))
    grouped = x.reshape(shape[0], groups, -1)
    expected = normalized(grouped, (2,)).reshape(shape)
    affine = (-1,) + (1,) * (len(shape) - 2)
    out = F.group_norm(autograd.Tensor(x), groups, autograd.Tensor(weight),
                       autograd.Tensor(bias))
    np.testing.assert_allclose(out.numpy(), expected * weight.reshape(affine)
                               + bias.reshape(affine), rtol=1e-10, atol=1e-10)
    check_op(lambda t, w, b: F.group_norm(t, groups, w, b), x, weight, bias)
    check_op(lambda t: F.group_norm(t, groups), x)


@given(data=st.data(), case=grouped_shapes(), channels_last=st.booleans())
def test_group_norm_silu_is_silu_of_group_norm_and_gradchecks(data, case, channels_last):
    shape, groups = case
    x = data.draw(arrays(shape))
    if channels_last and x.ndim == 4:  # as a convolution leaves it
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    weight, bias = data.draw(arrays(shape[1:2])), data.draw(arrays(shape[1:2]))
    tensors = [autograd.Tensor(a) for a in (x, weight, bias)]
    expected = F.silu(F.group_norm(tensors[0], groups, tensors[1], tensors[2]))
    fused = F.group_norm_silu(tensors[0], groups, tensors[1], tensors[2])
    np.testing.assert_allclose(fused.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    check_op(lambda t, w, b: F.group_norm_silu(t, groups, w, b), x, weight, bias)
    check_op(lambda t: F.group_norm_silu(t, groups), x)


def test_group_norm_silu_float32_matches_float64_and_errors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 6, 6)) * 3
    w, b = rng.standard_normal(16), rng.standard_normal(16)
    wide = F.group_norm_silu(autograd.Tensor(x), 4, autograd.Tensor(w), autograd.Tensor(b))
    narrow = F.group_norm_silu(autograd.Tensor(x.astype(np.float32)), 4,
                               autograd.Tensor(w.astype(np.float32)),
                               autograd.Tensor(b.astype(np.float32)))
    assert narrow.dtype == np.float32
    np.testing.assert_allclose(narrow.numpy(), wide.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not divisible"):
        F.group_norm_silu(autograd.Tensor(x), 5)


@given(data=st.data(), n=st.integers(1, 3), channels=st.integers(1, 4),
       value=st.floats(-3, 3))
def test_groups_of_one_value_and_constant_groups_have_finite_exact_gradients(data, n,
                                                                           channels, value):
    # Groups of size 1 (one channel, one position): variance 0, output = bias.
    x = data.draw(arrays((n, channels, 1, 1)))
    bias = data.draw(arrays((channels,)))
    out = F.group_norm(autograd.Tensor(x), channels, None, autograd.Tensor(bias))
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(bias[:, None, None], x.shape))
    check_op(lambda t, b: F.group_norm(t, channels, None, b), x, bias)
    # Constant groups: 0 * rsqrt(eps), and a gradient equal to the finite difference.
    constant = np.full((n, channels, 2, 3), value)
    weight = data.draw(arrays((channels,)))
    check_op(lambda t, w: F.group_norm(t, 1, w), constant, weight)
    x = constant.copy()
    x[:, :, 0, 0] += 1.0  # one non-constant group next to constant ones
    check_op(lambda t, w: F.group_norm(t, channels, w), x, weight)


def test_group_norm_keeps_float32_and_matches_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 7, 7)) * 3 + 1
    w, b = rng.standard_normal(32), rng.standard_normal(32)
    wide = F.group_norm(autograd.Tensor(x), 8, autograd.Tensor(w), autograd.Tensor(b))
    narrow = F.group_norm(autograd.Tensor(x.astype(np.float32), requires_grad=True), 8,
                          autograd.Tensor(w.astype(np.float32)),
                          autograd.Tensor(b.astype(np.float32)))
    assert narrow.dtype == np.float32
    narrow.sum().backward()
    np.testing.assert_allclose(narrow.numpy(), wide.numpy(), rtol=1e-4, atol=1e-5)


def test_group_norm_errors():
    x = autograd.zeros(2, 6, 3)
    with pytest.raises(ValueError, match="not divisible"):
        F.group_norm(x, 4)
    with pytest.raises(ValueError, match=r"\(N, C, \*\)"):
        F.group_norm(autograd.zeros(6), 3)
    with pytest.raises(ValueError, match="weight has shape"):
        F.group_norm(x, 3, autograd.ones(5))
    with pytest.raises(TypeError, match="float32 and float64"):
        F.group_norm(x, 3, autograd.ones(6, dtype=np.float64))
    with pytest.raises(TypeError, match="floating"):
        F.group_norm(autograd.Tensor(np.zeros((2, 6), np.int64)), 3)


# ---- layer_norm ---------------------------------------------------------------------------


@given(data=st.data(), lead=st.lists(st.integers(1, 3), max_size=2),
       normalized_shape=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple))
def test_layer_norm_matches_definition_and_gradcheck(data, lead, normalized_shape):
    shape = (*lead, *normalized_shape)
    x = data.draw(arrays(shape))
    weight, bias = data.draw(arrays(normalized_shape)), data.draw(arrays(normalized_shape))
    axes = tuple(range(len(lead), len(shape)))
    out = F.layer_norm(autograd.Tensor(x), normalized_shape, autograd.Tensor(weight),
                       autograd.Tensor(bias))
    np.testing.assert_allclose(out.numpy(), normalized(x, axes) * weight + bias,
                               rtol=1e-10, atol=1e-10)
    check_op(lambda t, w, b: F.layer_norm(t, normalized_shape, w, b), x, weight, bias)


def test_layer_norm_errors():
    x = autograd.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(x, (3,))
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(x, (1, 2, 3, 4))
    with pytest.raises(ValueError, match="bias has shape"):
        F.layer_norm(x, 4, None, autograd.zeros(3))


# ---- batch_norm ---------------------------------------------------------------------------


@given(data=st.data(), n=st.integers(2, 4), channels=st.integers(1, 3),
       spatial=st.lists(st.integers(1, 3), max_size=2), momentum=st.sampled_from([0.1, 0.5]))
def test_batch_norm_training_normalizes_per_channel_and_updates_running_stats(
        data, n, channels, spatial, momentum):
    shape = (n, channels, *spatial)
    x = data.draw(arrays(shape))
    axes = (0,) + tuple(range(2, len(shape)))
    running_mean = autograd.Tensor(data.draw(arrays((channels,))).copy())
    running_var = autograd.Tensor(data.draw(arrays((channels,), low=0.5, high=2.0)).copy())
    old_mean, old_var = running_mean.numpy().copy(), running_var.numpy().copy()
    out = F.batch_norm(autograd.Tensor(x), running_mean, running_var, training=True,
                       momentum=momentum)
    np.testing.assert_allclose(out.numpy(), normalized(x, axes), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(running_mean.numpy(), (1 - momentum) * old_mean
                               + momentum * x.mean(axis=axes))
    np.testing.assert_allclose(running_var.numpy(), (1 - momentum) * old_var
                               + momentum * x.var(axis=axes, ddof=1))
    weight, bias = data.draw(arrays((channels,))), data.draw(arrays((channels,)))
    check_op(lambda t, w, b: F.batch_norm(t, None, None, w, b, training=True), x, weight, bias)


@given(data=st.data(), n=st.integers(1, 3), channels=st.integers(1, 3))
def test_batch_norm_eval_uses_running_stats(data, n, channels):
    x = data.draw(arrays((n, channels, 2)))
    mean = data.draw(arrays((channels,)))
    var = data.draw(arrays((channels,), low=0.1, high=2.0))
    weight, bias = data.draw(arrays((channels,))), data.draw(arrays((channels,)))
    stats = (autograd.Tensor(mean), autograd.Tensor(var))
    out = F.batch_norm(autograd.Tensor(x), *stats, autograd.Tensor(weight),
                       autograd.Tensor(bias))
    expected = (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) * weight[:, None] \
        + bias[:, None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)
    check_op(lambda t, w, b: F.batch_norm(t, *stats, w, b), x, weight, bias,
             device_fn=lambda device: lambda t, w, b: F.batch_norm(
                 t, *(s.to(device) for s in stats), w, b))


def test_batch_norm_errors():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(autograd.zeros(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(autograd.zeros(2, 3), None, None, training=False)
    with pytest.raises(ValueError, match="running_mean has shape"):
        F.batch_norm(autograd.zeros(2, 3), autograd.zeros(2), autograd.ones(3))
    with pytest.raises(ValueError, match="expects input with 4 dims"):
        nn.BatchNorm2d(3)(autograd.zeros(2, 3))


# ---- PyTorch's values (float64), with the fast paths and with the reference kernels --------

TORCH_CASES = {
    "group_norm_4": lambda x, w, b: F.group_norm(x, 4, w, b, eps=1e-5),
    "layer_norm_last": lambda x, w, b: F.layer_norm(x, (6,), w, b, eps=1e-5),
    "batch_norm_train": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True,
                                                     eps=1e-5),
}


@pytest.mark.parametrize("reference_kernels", ["0", "1"], ids=["fast paths", "references"])
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_pytorch(name, reference_kernels, monkeypatch):
    monkeypatch.setenv("AUTOGRAD_REFERENCE_KERNELS", reference_kernels)
    check_torch_case(name, TORCH_CASES[name], rtol=1e-10, atol=1e-12)


# ---- modules ------------------------------------------------------------------------------


def test_norm_modules_have_pytorch_defaults_and_parameters():
    group = nn.GroupNorm(8, 32)
    assert group.eps == 1e-5 and group.weight.shape == (32,)
    np.testing.assert_array_equal(group.weight.numpy(), 1.0)
    np.testing.assert_array_equal(group.bias.numpy(), 0.0)
    assert [name for name, _ in nn.LayerNorm((3, 4)).named_parameters()] == ["weight", "bias"]
    assert list(nn.GroupNorm(2, 4, affine=False).parameters()) == []
    batch = nn.BatchNorm2d(5)
    assert batch.momentum == 0.1 and batch.eps == 1e-5
    assert set(batch.state_dict()) == {"weight", "bias", "running_mean", "running_var",
                                       "num_batches_tracked"}
    assert [name for name, _ in batch.named_buffers()] == ["running_mean", "running_var",
                                                           "num_batches_tracked"]
    with pytest.raises(ValueError, match="not divisible"):
        nn.GroupNorm(3, 32)


def test_batch_norm_module_train_then_eval():
    rng = np.random.default_rng(1)
    layer = nn.BatchNorm2d(3).double()
    batches = [rng.standard_normal((4, 3, 2, 2)) * 2 + 1 for _ in range(3)]
    mean, var = np.zeros(3), np.ones(3)
    for x in batches:
        layer(autograd.Tensor(x))
        mean = 0.9 * mean + 0.1 * x.mean(axis=(0, 2, 3))
        var = 0.9 * var + 0.1 * x.var(axis=(0, 2, 3), ddof=1)
    assert layer.num_batches_tracked.item() == 3
    np.testing.assert_allclose(layer.running_mean.numpy(), mean)
    np.testing.assert_allclose(layer.running_var.numpy(), var)
    layer.eval()
    x = batches[0]
    out = layer(autograd.Tensor(x))
    np.testing.assert_allclose(out.numpy(), (x - mean[:, None, None])
                               / np.sqrt(var[:, None, None] + 1e-5))
    assert layer.num_batches_tracked.item() == 3  # eval leaves the statistics alone


def test_batch_norm_cumulative_average_and_untracked_stats():
    rng = np.random.default_rng(2)
    layer = nn.BatchNorm1d(2, momentum=None).double()
    batches = [rng.standard_normal((5, 2)) for _ in range(4)]
    for x in batches:
        layer(autograd.Tensor(x))
    np.testing.assert_allclose(layer.running_mean.numpy(),
                               np.mean([x.mean(axis=0) for x in batches], axis=0))
    untracked = nn.BatchNorm1d(2, track_running_stats=False).double().eval()
    x = batches[0]
    np.testing.assert_allclose(untracked(autograd.Tensor(x)).numpy(), normalized(x, (0,)))
    assert untracked.running_mean is None


@given(data=st.data())
def test_norm_modules_gradcheck(data):
    x = data.draw(arrays((2, 4, 3, 3)))
    for layer in (nn.GroupNorm(2, 4), nn.LayerNorm((3, 3)), nn.BatchNorm2d(4)):
        layer.double()
        for p in layer.parameters():
            p.data = data.draw(arrays(p.shape)).copy()
        check_module(layer, x, directional=True)


# ---- the ops on every device ----------------------------------------------------------------
# check_on_device: output and gradients against the CPU's reference kernels, float32 and
# float64, NCHW and channels-last. The "cpu" leg checks the numba paths through the ops' 4-D
# inputs, "cuda-sim" that the device code runs on CuPy arrays alone (no host transfer),
# "cuda" the CUDA kernels and CuPy on a GPU, "emulated" the CUDA sources compiled for the CPU
# (the ops with CUDA kernels: group_norm and group_norm_silu; layer_norm and batch_norm have
# none, so their emulated leg would be the cuda-sim leg again).

NORMS = {
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), [(2, 6, 5, 4), (6,), (6,)]),
    "group_norm, groups of one channel": (lambda x, w, b: F.group_norm(x, 6, w, b),
                                          [(2, 6, 3, 5), (6,), (6,)]),
    "group_norm, no affine": (lambda x: F.group_norm(x, 3), [(3, 6, 4, 4)]),
    "group_norm_silu": (lambda x, w, b: F.group_norm_silu(x, 3, w, b),
                        [(2, 6, 5, 4), (6,), (6,)]),
    "layer_norm, last dim": (lambda x, w, b: F.layer_norm(x, 8, w, b), [(2, 3, 8), (8,), (8,)]),
    "layer_norm, last two dims": (lambda x, w, b: F.layer_norm(x, (4, 5), w, b),
                                  [(2, 3, 4, 5), (4, 5), (4, 5)]),
    "batch_norm, training": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                             [(4, 3, 5, 5), (3,), (3,)]),
}


@CHANNELS_LAST
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(NORMS))
def test_norms_on_every_device(device, name, dtype, channels_last, monkeypatch):
    fn, shapes = NORMS[name]
    inputs = [normal(*s) * 1.5 + 0.3 for s in shapes]
    check_on_device(fn, inputs, device, dtype, channels_last, monkeypatch, layout=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_running_statistics_and_evaluation(device, dtype, monkeypatch):
    """Training updates the running mean and unbiased variance in place, on the device;
    evaluation normalises with them (output and gradients as on the CPU)."""
    initial = (np.array([0.2, -0.1, 0.4], dtype), np.array([1.5, 0.7, 2.0], dtype))
    inputs = [normal(4, 3, 3, 5), normal(3), normal(3)]
    for training in (True, False):
        for channels_last in (False, True):
            # check_on_device runs fn on the CPU first, then on the device: one set of stats each.
            stats = [tuple(Tensor(to_device(a.copy(), where)) for a in initial)
                     for where in ("cpu", device)]
            runs = []

            def fn(x, w, b, training=training, stats=stats, runs=runs):
                mean, var = stats[len(runs)]
                runs.append(x.device)
                return F.batch_norm(x, mean, var, w, b, training=training, momentum=0.3)

            check_on_device(fn, inputs, device, dtype, channels_last, monkeypatch, layout=False)
            assert runs == ["cpu", device]
            for got, want, start in zip(stats[1], stats[0], initial):
                assert got.device == device and got.dtype == dtype
                np.testing.assert_allclose(got.numpy(force=True), want.numpy(), rtol=1e-5,
                                           atol=1e-6)
                assert np.allclose(want.numpy(), start) != training  # updated when training


def test_batch_norm_running_statistics_on_another_device_raise(device):
    if device == "cpu":
        pytest.skip("needs a second device")
    x = Tensor(np.ones((2, 3, 2, 2)), device=device)
    stat = Tensor(np.ones(3))
    with pytest.raises(RuntimeError, match="running_mean is on cpu but the input is on cuda"):
        F.batch_norm(x, stat, stat, training=True)



@CHANNELS_LAST
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(name for name in NORMS if name.startswith("group_norm")))
def test_group_norms_on_the_emulated_cuda_kernels(emulated, name, dtype, channels_last,
                                                  monkeypatch):
    fn, shapes = NORMS[name]
    inputs = [normal(*s) * 1.5 + 0.3 for s in shapes]
    check_on_device(fn, inputs, emulated, dtype, channels_last, monkeypatch, layout=False)


# ---- fast paths: the fused kernels against the ops' math ----------------------------------
# numba on the CPU (both kernel families: (N, C, M) contiguous and channels-last, and the
# fused SiLU), and the CUDA sources of kernels/cuda/norm.cu on device "cuda" (a real GPU, or
# emulated on the CPU by tests/cuda_emulator.py).

GROUP_NORM_OPS = {False: F.group_norm, True: F.group_norm_silu}
LAYOUTS = ["contiguous", "channels_last", "strided"]


def fast_path_name(silu: bool) -> str:
    return "group_norm_silu" if silu else "group_norm"


@st.composite
def group_norm_case(draw, dtype):
    """(x (N, C, M), weight, bias) of `dtype`, groups: centred or offset values, spread or
    constant groups."""
    groups, per_group = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shape = (draw(st.integers(1, 3)), groups * per_group, draw(st.integers(1, 20)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    offset, spread = draw(st.sampled_from([(0.0, 1.0), (5.0, 0.1), (-2.0, 3.0), (1.0, 0.0)]))
    x = (offset + spread * rng.standard_normal(shape)).astype(dtype)
    weight, bias = (rng.standard_normal(shape[1]).astype(dtype) for _ in range(2))
    return [x, weight, bias], groups


def memory_layout(array) -> str:
    if array.flags.c_contiguous:
        return "contiguous"
    return "channels_last" if array.transpose(0, 2, 1).flags.c_contiguous else "strided"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data(), silu=st.booleans(), layout=st.sampled_from(LAYOUTS))
def test_group_norm_kernels_match_the_op_math(dtype, data, silu, layout):
    arrays_in, groups = data.draw(group_norm_case(dtype))
    assert registry.lookup(fast_path_name(silu), arrays_in[0]) is not None
    # float32 rounding grows with rstd (x * rstd * w + shift cancels): up to 1 / sqrt(eps)
    x = arrays_in[0].astype(np.float64)
    rstd = 1 / np.sqrt(x.reshape(x.shape[0], groups, -1).var(axis=2).min() + 1e-5)
    size = {np.float32: 2e-5, np.float64: 1e-11}[dtype] * (1 + rstd)
    out, _ = assert_fast_path_matches_math(
        lambda x, w, b: GROUP_NORM_OPS[silu](x, groups, w, b), arrays_in,
        layouts=[layout, "contiguous", "contiguous"],
        tolerance=dict(rtol=1e-4 if dtype == np.float32 else 1e-10, atol=size))
    if layout == "channels_last" or silu:  # the channels-last family keeps that layout
        assert out.transpose(0, 2, 1).flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_group_norm_drivers_on_big_inputs(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 32, 1024)) + 2).astype(dtype)
    assert x.size >= norm_kernels.PARALLEL_MIN_ELEMENTS
    weight, bias = (rng.standard_normal(32).astype(dtype) for _ in range(2))
    assert_fast_path_matches_math(lambda t, w, b: F.group_norm(t, 8, w, b), [x, weight, bias],
                                  tolerance=dict(rtol=1e-4, atol=1e-4))
    out, mean, rstd = norm_kernels._forward_numba(x, weight, bias, 8, 1e-5, False)
    serial = np.empty_like(out), np.empty_like(mean), np.empty_like(rstd)
    norm_kernels._forward_serial(x, weight, bias, 8, 1e-5, *serial)
    for a, b in zip(serial, (out, mean, rstd)):
        np.testing.assert_array_equal(a, b)


def test_group_norm_has_no_fast_path_for_other_dtypes():
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float16)
    assert registry.lookup("group_norm", x) is None
    out = F.group_norm(autograd.Tensor(x), 2)  # the op's math
    assert out.dtype == np.float16
    grouped = x.astype(np.float64).reshape(2, 2, -1)
    np.testing.assert_allclose(out.numpy(), normalized(grouped, (2,)).reshape(x.shape),
                               atol=2e-3)


# (N, C, M, groups): sizes around the CUDA kernels' block of 256 threads
NORM_CASES = {
    "groups of 2 channels": (2, 6, 5, 3),
    "M = 1, 7 channels": (3, 7, 1, 1),
    "groups of one channel": (2, 5, 9, 5),
    "more channels per group than threads": (1, 300, 2, 1),
    "more positions than threads": (2, 3, 700, 3),
    "one value": (1, 1, 1, 1),
}


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(NORM_CASES))
def test_group_norm_cuda_kernels_match_the_op_math(kernel_leg, name, dtype, layout, silu):
    n, c, m, groups = NORM_CASES[name]
    rng = np.random.default_rng(3)
    arrays_in = [(rng.standard_normal((n, c, m)) * 2 + 0.5).astype(dtype),
                 *(rng.standard_normal(c).astype(dtype) for _ in range(2))]
    assert registry.lookup(fast_path_name(silu), on("cuda", arrays_in[0], layout)) is not None
    out, _ = assert_fast_path_matches_math(
        lambda x, w, b: GROUP_NORM_OPS[silu](x, groups, w, b), arrays_in, device="cuda",
        layouts=[layout, "contiguous", "contiguous"],
        tolerance=dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else None)
    # The kernels keep x's layout: channels-last stays channels-last, else C order.
    expected = "channels_last" if layout == "channels_last" and min(c, m) > 1 else "contiguous"
    assert memory_layout(out) == expected


def test_group_norm_cuda_backward_is_deterministic(kernel_leg):
    rng = np.random.default_rng(4)
    x = on("cuda", rng.standard_normal((2, 8, 30)).astype(np.float32), "channels_last")
    upstream = rng.standard_normal((2, 8, 30))
    runs = [forward_backward(lambda t: F.group_norm(t, 4), [x], upstream)[1][0]
            for _ in range(2)]
    np.testing.assert_array_equal(*(to_device(g, "cpu") for g in runs))


@pytest.mark.parametrize("per_group", [1, 2, 3, 4, 7, 64, 100, 256, 300, 1000])
@pytest.mark.parametrize("m", [1, 2, 3, 31, 33, 784, 5000])
def test_cuda_backward_team_size_covers_a_group_in_one_pass_when_it_can(per_group, m):
    """Threads per channel: a power of two dividing the block, all channels of the group at
    once where the block has room, no more threads than positions (rounded up)."""
    team = norm_kernels._team_size(per_group, m)
    threads = norm_kernels.NORM_THREADS
    assert team >= 1 and team & (team - 1) == 0 and threads % team == 0
    assert team == 1 or team * per_group <= threads
    assert team >= m or 2 * team * per_group > threads  # as wide as it may be
    assert team < 2 * m  # no lane sure to idle
