"""Device bookkeeping of the reduction, shape, indexing and matmul ops (softmax:
tests/test_softmax.py, attention: tests/test_attention.py): results (forward and gradients)
on the device equal to the CPU's on the same inputs, device arrays where NumPy would hand
back host scalars, host index arrays moved to the device, no hidden transfers, and errors
that name what was wrong. The legs: a real GPU ("cuda", skipped without one) and the
simulated CuPy ("cuda-sim")."""

from __future__ import annotations

import fake_cupy
import numpy as np
import pytest
from device_testing import assert_same_as_cpu, counts_transfers, host

import autograd
from autograd import ops
from autograd.backend import device_of, to_device


@pytest.fixture
def x34():
    return np.random.default_rng(0).standard_normal((3, 4))


# ---- reductions ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, fn", [
    ("sum", lambda t: t.sum()), ("mean", lambda t: t.mean()), ("var", lambda t: t.var()),
    ("std", lambda t: t.std(dim=1)), ("amax", lambda t: t.amax()),
    ("amin", lambda t: t.amin(dim=0, keepdim=True)),
    ("logsumexp", lambda t: t.logsumexp(dim=(0, 1))),
    ("max_values", lambda t: t.max(dim=1).values), ("min_values", lambda t: t.min(0).values),
])
def test_reductions_stay_on_the_device_without_transfers(name, fn, gpu_device, x34):
    if counts_transfers(gpu_device):
        fake_cupy.transfers.clear()
    x = autograd.Tensor(x34, device=gpu_device, requires_grad=True)
    out = fn(x)
    out.sum().backward()
    # A full reduction is a 0-d device array, not a host scalar (NumPy's np.float64).
    assert device_of(out.data) == gpu_device and device_of(x.grad.data) == gpu_device
    if counts_transfers(gpu_device):
        assert isinstance(out.data, fake_cupy.ndarray)
        assert fake_cupy.transfers["to_host"] == 0, f"{name} copied to the host"
    assert_same_as_cpu(fn, x34, device=gpu_device)


@pytest.mark.parametrize("pick", ["argmax", "argmin"])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (0, False), (1, True), (-1, False)])
def test_argmax_argmin_are_int64_tensors_on_the_device(pick, dim, keepdim, gpu_device, x34):
    x = autograd.Tensor(x34, device=gpu_device)
    got = getattr(x, pick)(dim, keepdim) if dim is not None else getattr(x, pick)()
    assert got.device == gpu_device and got.dtype == np.int64 and not got.requires_grad
    expected = getattr(np, pick)(x34, axis=dim, keepdims=keepdim)
    assert got.shape == np.shape(expected)
    np.testing.assert_array_equal(host(got.data), expected)


def test_max_with_dim_gives_indices_on_the_device(gpu_device, x34):
    result = autograd.Tensor(x34, device=gpu_device).max(dim=1, keepdim=True)
    assert result.indices.device == gpu_device and result.indices.dtype == np.int64
    np.testing.assert_array_equal(host(result.indices.data), np.argmax(x34, 1, keepdims=True))
    np.testing.assert_array_equal(host(result.values.data), x34.max(1, keepdims=True))


# ---- indexing -----------------------------------------------------------------------------


@pytest.mark.parametrize("index", [
    np.array([2, 0, 2, -1]),                        # a host array, repeated entries
    [1, 1, 0],                                      # a list
    (slice(None), np.array([[0, 3], [3, 3]])),      # an array after a slice
    np.array([True, False, True]),                  # a boolean mask
    (np.array([0, 2]), np.array([1, 3])),           # two arrays, broadcast together
    (Ellipsis, np.array([3, 3, 0])),
], ids=["array", "list", "slice-array", "mask", "two-arrays", "ellipsis"])
def test_indexing_a_device_tensor_with_host_indices(index, gpu_device, x34):
    got = assert_same_as_cpu(lambda t: t[index], x34, device=gpu_device)
    assert got[0][0].shape == x34[index].shape


def test_indexing_with_index_tensors_and_masks_on_either_side(gpu_device, x34):
    rows = autograd.tensor([2, 0, 2], dtype=autograd.int64)  # on the CPU
    assert_same_as_cpu(lambda t: t[rows] * 2, x34, device=gpu_device)
    rows_there = rows.to(gpu_device)
    assert_same_as_cpu(lambda t: t[rows_there.to(t.device)], x34, device=gpu_device)
    mask = autograd.Tensor(x34 > 0)
    assert_same_as_cpu(lambda t: t[mask], x34, device=gpu_device)
    assert_same_as_cpu(lambda t: t[mask.to(t.device)], x34, device=gpu_device)
    x = autograd.Tensor(x34, device=gpu_device)
    assert x[mask].device == gpu_device


def test_basic_indexing_on_the_device_stays_a_view(gpu_device, x34):
    x = autograd.Tensor(x34, device=gpu_device)
    for index in (np.int64(1), (np.int64(2), slice(1, None)), (1, np.int32(-1))):
        view = x[index]
        assert view._version_counter is x._version_counter, f"{index!r} made a copy"
        np.testing.assert_array_equal(host(view.data), x34[index])
    assert_same_as_cpu(lambda t: t[np.int64(1), ::2], x34, device=gpu_device)


@pytest.mark.parametrize("index", [np.array([0, 3]), [5], (slice(None), np.array([4])),
                                   np.array([True, False])])
def test_out_of_range_host_indices_raise_on_the_device_as_on_the_cpu(index, gpu_device, x34):
    # CuPy itself would wrap an out-of-range index around silently.
    with pytest.raises(IndexError) as on_cpu:
        autograd.Tensor(x34)[index]
    with pytest.raises(IndexError, match=r"into shape \(3, 4\)") as on_device:
        autograd.Tensor(x34, device=gpu_device)[index]
    assert str(on_cpu.value).split(": ")[-1] == str(on_device.value).split(": ")[-1]


def test_a_device_index_into_a_cpu_tensor_is_an_error(gpu_device, x34):
    index = autograd.tensor([0, 1], dtype=autograd.int64, device=gpu_device)
    with pytest.raises(RuntimeError, match="indexing a tensor on cpu with an index on cuda:0"):
        autograd.Tensor(x34)[index]
    with pytest.raises(RuntimeError, match="gather: the index is on cuda:0 but the tensor is "
                       "on cpu"):
        autograd.Tensor(x34).gather(1, autograd.tensor([[0], [1], [2]], dtype=autograd.int64,
                                                       device=gpu_device))


def test_gather_with_host_and_device_indices(gpu_device, x34):
    index = np.array([[0, 0, 3], [1, 2, 1], [3, 3, 3]])
    assert_same_as_cpu(lambda t: t.gather(1, index), x34, device=gpu_device)
    assert_same_as_cpu(lambda t: t.gather(0, [[0, 2, 1, 0], [2, 2, 0, 1]]), x34,
                       device=gpu_device)
    on_device = autograd.tensor(index, dtype=autograd.int64, device=gpu_device)
    assert_same_as_cpu(lambda t: t.gather(1, on_device if t.device != "cpu" else
                                          autograd.Tensor(index)), x34, device=gpu_device)
    with pytest.raises(IndexError, match="gather: index 4 is out of bounds for dim 1 with "
                       "size 4"):
        autograd.Tensor(x34, device=gpu_device).gather(1, np.array([[4], [0], [0]]))
    with pytest.raises(TypeError, match="gather index must be integers"):
        autograd.Tensor(x34, device=gpu_device).gather(1, np.zeros((3, 1)))


# ---- joining, splitting, padding, permuting ----------------------------------------------


def test_cat_stack_split_pad_permute_broadcast_on_the_device(gpu_device):
    rng = np.random.default_rng(2)
    a, b, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 1)), rng.standard_normal((2, 3))
    assert_same_as_cpu(lambda x, y: autograd.cat([x, y, x], dim=1), a, b, device=gpu_device)
    assert_same_as_cpu(lambda x, y: autograd.stack([x, y], dim=2), a, c, device=gpu_device)
    assert_same_as_cpu(lambda x: x.split([1, 2], dim=1), a, device=gpu_device)
    assert_same_as_cpu(lambda x: x.chunk(2, dim=1), a, device=gpu_device)
    assert_same_as_cpu(lambda x: ops.pad(x, (1, 2, 0, 1), value=0.5), a, device=gpu_device)
    assert_same_as_cpu(lambda x: x.unsqueeze(0).permute(2, 0, 1) * 1.0, a, device=gpu_device)
    assert_same_as_cpu(lambda x: x.expand(4, 2, 3), a, device=gpu_device)


def test_cat_of_channels_last_images_stays_channels_last_on_the_device(gpu_device):
    rng = np.random.default_rng(3)
    images = [np.ascontiguousarray(rng.standard_normal((2, 3, 3, c))).transpose(0, 3, 1, 2)
              for c in (1, 2)]
    tensors = [autograd.Tensor(to_device(np.ascontiguousarray(i.transpose(0, 2, 3, 1)),
                                         gpu_device)).permute(0, 3, 1, 2) for i in images]
    out = autograd.cat(tensors, dim=1)
    assert out.data.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(host(out.data), np.concatenate(images, axis=1))


def test_joining_tensors_on_two_devices_raises_naming_both(gpu_device):
    a, b = autograd.ones(2, 3), autograd.ones(2, 3, device=gpu_device)
    for join in (autograd.cat, autograd.stack):
        with pytest.raises(RuntimeError, match="cpu and cuda:0"):
            join([a, b])
    with pytest.raises(RuntimeError, match="cuda:0 and cpu"):
        autograd.matmul(b, a.T)


# ---- matmul --------------------------------------------------------------------------------


def test_matmul_shapes_on_the_device(gpu_device):
    rng = np.random.default_rng(4)
    for a_shape, b_shape in [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)),
                             ((2, 1, 4, 3), (5, 3, 2)), ((4, 3), (3, 2))]:
        assert_same_as_cpu(lambda x, y: x @ y, rng.standard_normal(a_shape),
                           rng.standard_normal(b_shape), device=gpu_device)


