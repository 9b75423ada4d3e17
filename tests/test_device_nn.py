"""nn on a device: Module.to / cuda / cpu move parameters, buffers and gradients in place;
state dicts across devices; every layer's forward and gradients on "cuda" equal the CPU's;
inputs on the wrong device raise naming both devices; losses, dropout, clip_grad_norm_,
parallel slices and save / load on a device. The "cuda" legs run on a real GPU where there
is one and on the simulated CuPy (tests/fake_cupy.py) everywhere."""

from __future__ import annotations

import threading

import fake_cupy
import numpy as np
import pytest
from device_testing import host, simulated, tolerance
from module_testing import small_net

import autograd
from autograd import nn, optim
from autograd.backend import device_of
from autograd.nn import functional as F
from autograd.nn.parallel import Replicas, parallel_apply, sliced_forward
from autograd.random import dropout_keep_mask

# ---- Module.to and state dicts --------------------------------------------------------------


def test_module_to_moves_parameters_buffers_and_gradients_in_place(gpu_device):
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params = list(model.parameters())
    values = [p.numpy().copy() for p in params]
    for p in params:
        p.grad = autograd.ones(p.shape)
    buffers = dict(model.named_buffers())
    assert model.to(gpu_device) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]  # same objects
    assert dict(model.named_buffers()) == buffers
    for p, value in zip(params, values):
        assert p.device == gpu_device and p.grad.device == gpu_device and p.requires_grad
        np.testing.assert_array_equal(host(p), value)
    assert all(b.device == gpu_device for b in buffers.values())
    assert buffers["1.num_batches_tracked"].dtype == np.int64  # integers keep their dtype

    model.to(gpu_device, np.float64)  # device and dtype at once; no move where it is
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert buffers["1.running_mean"].dtype == np.float64
    assert buffers["1.num_batches_tracked"].dtype == np.int64
    model.cpu().float()
    for p, value in zip(params, values):
        assert p.device == "cpu" and p.dtype == np.float32
        np.testing.assert_array_equal(p.numpy(), value)  # the round trip is exact
    assert model.cuda() is model and params[0].device == gpu_device
    model.to(autograd.zeros(1, dtype=np.float64))  # a tensor's device (cpu) and dtype
    assert params[0].device == "cpu" and params[0].dtype == np.float64
    model.to(device="cuda", dtype=np.float32)
    assert params[0].device == gpu_device and params[0].dtype == np.float32
    with pytest.raises(TypeError, match="floating point"):
        model.to(np.int64)


def test_state_dict_lives_on_the_modules_device_and_loads_from_any(gpu_device):
    cpu_model, gpu_model = small_net(), small_net().to(gpu_device)
    autograd.manual_seed(1)
    other = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                          nn.Conv2d(4, 1, 1)).double()
    state = gpu_model.state_dict()
    assert all(t.device == gpu_device and not t.requires_grad for t in state.values())
    parameter = next(gpu_model.parameters())
    assert state["0.weight"].data is parameter.data  # detached, sharing memory
    gpu_model.load_state_dict(other.state_dict())  # CPU state into a GPU model
    assert parameter.device == gpu_device
    for (name, mine), theirs in zip(gpu_model.named_parameters(), other.parameters()):
        np.testing.assert_array_equal(host(mine), theirs.numpy(), err_msg=name)
    cpu_model.load_state_dict(gpu_model.state_dict())  # and a GPU state into a CPU one
    for mine, theirs in zip(cpu_model.parameters(), other.parameters()):
        assert mine.device == "cpu"
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    bad = dict(gpu_model.state_dict())
    bad["0.bias"] = autograd.zeros(5, device=gpu_device)
    with pytest.raises(RuntimeError, match=r"0.bias: checkpoint shape \(5,\)"):
        cpu_model.load_state_dict(bad)


# ---- layers on a device ---------------------------------------------------------------------


def _layers():
    """(name, module factory, input arrays, extra forward keywords)."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 4, 3, 3))
    tokens = rng.standard_normal((2, 3, 4))
    padding = np.array([[False, False, True], [False, True, True]])
    return [
        ("linear", lambda: nn.Linear(3, 5), [rng.standard_normal((2, 3))], {}),
        ("conv2d", lambda: nn.Conv2d(4, 3, 3, padding=1), [image], {}),
        ("conv_transpose2d", lambda: nn.ConvTranspose2d(4, 2, 3, stride=2), [image], {}),
        ("group_norm", lambda: nn.GroupNorm(2, 4), [image], {}),
        ("layer_norm", lambda: nn.LayerNorm(4), [tokens], {}),
        ("batch_norm_eval", lambda: nn.BatchNorm2d(4).eval(), [image], {}),
        ("self_attention2d", lambda: nn.SelfAttention2d(4, 2, norm_groups=2), [image], {}),
        ("cross_attention2d", lambda: nn.CrossAttention2d(4, 4, 2, norm_groups=2),
         [image, tokens], {}),
        ("mha_weights_causal", lambda: nn.MultiheadAttention(4, 2, batch_first=True),
         [tokens, tokens, tokens], dict(is_causal=True)),
        ("mha_padding_no_weights", lambda: nn.MultiheadAttention(4, 2, batch_first=True),
         [tokens, tokens, tokens], dict(key_padding_mask=padding, need_weights=False)),
        ("mha_bool_mask_seq_first", lambda: nn.MultiheadAttention(4, 1),
         [tokens, tokens, tokens], dict(attn_mask=np.triu(np.ones((2, 2), bool), 1))),
        ("dropout", lambda: nn.Dropout(0.4, generator=np.random.default_rng(3)),
         [rng.standard_normal((3, 5))], {}),
    ]


def _run_layer(name, make, inputs, kwargs, device):
    autograd.manual_seed(0)  # the same initial parameters on both devices
    model = make().double().to(device)
    tensors = [autograd.tensor(a, device=device, requires_grad=True) for a in inputs]
    out = model(*tensors, **kwargs)
    outputs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
    upstream = np.random.default_rng(7).standard_normal(outputs[0].shape)
    (outputs[0] * autograd.tensor(upstream, device=device)).sum().backward()
    grads = [t.grad for t in tensors] + [p.grad for p in model.parameters()]
    return outputs, grads


@pytest.mark.parametrize("case", _layers(), ids=lambda case: case[0])
def test_layers_on_a_device_match_the_cpu(case, gpu_device):
    expected_outputs, expected_grads = _cpu_run(case)
    outputs, grads = _run_layer(*case, gpu_device)
    for out, expected in zip(outputs, expected_outputs):
        assert out.device == gpu_device
        np.testing.assert_allclose(host(out), expected, **tolerance())
    for grad, expected in zip(grads, expected_grads):
        assert (grad is None) == (expected is None)
        if grad is not None:
            assert grad.device == gpu_device
            np.testing.assert_allclose(host(grad), expected, **tolerance())


def _cpu_run(case):
    outputs, grads = _run_layer(*case, "cpu")
    return [o.numpy().copy() for o in outputs], [None if g is None else g.numpy().copy()
                                                  for g in grads]


@pytest.mark.parametrize("make, inputs", [
    (lambda: nn.Linear(3, 2), lambda: [autograd.ones(2, 3)]),
    (lambda: nn.Conv2d(2, 2, 3), lambda: [autograd.ones(1, 2, 4, 4)]),
    (lambda: nn.GroupNorm(1, 2), lambda: [autograd.ones(1, 2, 3)]),
    (lambda: nn.LayerNorm(3), lambda: [autograd.ones(2, 3)]),
    (lambda: nn.Embedding(5, 2), lambda: [autograd.tensor(np.array([1, 2]))]),
    (lambda: nn.MultiheadAttention(4, 2), lambda: [autograd.ones(3, 1, 4)] * 3),
    (lambda: nn.CrossAttention2d(2, 3, norm_groups=1),
     lambda: [autograd.ones(1, 2, 2, 2), autograd.ones(1, 4, 3)]),
], ids=["linear", "conv2d", "group_norm", "layer_norm", "embedding", "mha", "cross_attention"])
def test_an_input_on_another_device_is_an_error_naming_both(make, inputs, gpu_device):
    model = make().to(gpu_device)
    with pytest.raises(RuntimeError, match=r"(cpu.*cuda:0|cuda:0.*cpu)"):
        model(*inputs())


def test_embedding_moves_host_ids_and_keeps_the_padding_row_without_gradient(device):
    autograd.manual_seed(2)
    reference = nn.Embedding(6, 3, padding_idx=1).double()
    layer = nn.Embedding(6, 3, padding_idx=1).double().to(device)
    layer.load_state_dict(reference.state_dict())
    ids = np.array([[0, 1, 5], [1, 1, 2]])
    upstream = np.random.default_rng(4).standard_normal((2, 3, 3))
    for model, target in ((reference, "cpu"), (layer, device)):
        out = model(ids)  # host ids, moved to the table's device
        assert out.device == target
        (out * autograd.tensor(upstream, device=target)).sum().backward()
    np.testing.assert_array_equal(host(layer(ids)), reference(ids).numpy())
    np.testing.assert_allclose(host(layer.weight.grad), reference.weight.grad.numpy(),
                               **tolerance())
    assert not host(layer.weight.grad)[1].any()
    np.testing.assert_array_equal(host(layer(autograd.tensor(ids, device=device))),
                                  reference(ids).numpy())  # ids already there
    with pytest.raises(IndexError, match=r"\[0, 6\)"):
        layer(np.array([0, 6]))


def test_losses_take_host_targets_and_match_the_cpu(device):
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((4, 3)), np.array([0, 2, -100, 1])
    probs = rng.dirichlet(np.ones(3), size=4)
    weight = np.array([0.5, 1.0, 2.0])
    cases = [
        lambda x, dev: F.mse_loss(x, probs),
        lambda x, dev: F.cross_entropy(x, labels, label_smoothing=0.1),
        lambda x, dev: F.cross_entropy(x, labels, weight=autograd.tensor(weight, device=dev),
                                       label_smoothing=0.2),
        lambda x, dev: F.cross_entropy(x, autograd.tensor(labels, device=dev),
                                       reduction="sum"),
        lambda x, dev: F.cross_entropy(x, probs, label_smoothing=0.1),
        lambda x, dev: F.nll_loss(F.log_softmax(x, 1), labels, reduction="none").sum(),
    ]
    for i, loss_of in enumerate(cases):
        results = []
        for target in ("cpu", device):
            x = autograd.tensor(logits, device=target, requires_grad=True)
            loss = loss_of(x, target)
            assert loss.device == target
            loss.backward()
            results.append((host(loss), host(x.grad)))
        (cpu_loss, cpu_grad), (loss, grad) = results
        np.testing.assert_allclose(loss, cpu_loss, **tolerance(), err_msg=f"loss {i}")
        np.testing.assert_allclose(grad, cpu_grad, **tolerance(), err_msg=f"grad {i}")
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        F.cross_entropy(autograd.tensor(logits, device=device), np.array([0, 1, 2, 3]))


def test_dropout_masks_are_drawn_on_the_host_and_moved(device):
    mask = dropout_keep_mask((3, 4), 0.5, np.float32, np.random.default_rng(9), device)
    assert device_of(mask) == device and mask.dtype == np.float32
    np.testing.assert_array_equal(host(mask), dropout_keep_mask(
        (3, 4), 0.5, np.float32, np.random.default_rng(9)))
    assert device_of(dropout_keep_mask((2,), 1.0, np.float64, device=device)) == device
    x = autograd.ones(3, 4, device=device)
    out = F.dropout(x, 0.25, generator=np.random.default_rng(1))
    expected = F.dropout(autograd.ones(3, 4), 0.25, generator=np.random.default_rng(1))
    assert out.device == device
    np.testing.assert_array_equal(host(out), expected.numpy())


# ---- clip_grad_norm_ ------------------------------------------------------------------------


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])  # clipped, and left as they are
def test_clip_grad_norm_on_a_device_matches_the_cpu_without_a_host_copy(norm_type, max_norm,
                                                                       gpu_device):
    rng = np.random.default_rng(6)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]

    def clipped(target):
        params = [nn.Parameter(np.zeros_like(g)).to(target) for g in grads]
        for p, g in zip(params, grads):
            p.grad = autograd.tensor(g, device=target)
        norm = nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        return norm, [p.grad for p in params]

    expected_norm, expected = clipped("cpu")
    fake_cupy.transfers.clear()
    norm, got = clipped(gpu_device)
    if simulated():
        assert fake_cupy.transfers["to_host"] == 0
    assert norm.device == gpu_device and norm.ndim == 0 and norm.dtype == np.float64
    np.testing.assert_allclose(host(norm), expected_norm.item(), rtol=1e-12)
    for g, e in zip(got, expected):
        assert g.device == gpu_device
        np.testing.assert_allclose(host(g), e.numpy(), rtol=1e-12, atol=0)
    joint = np.linalg.norm(np.concatenate([host(g).ravel() for g in got]), norm_type)
    assert joint == pytest.approx(min(max_norm, expected_norm.item()), rel=1e-5)


def test_clip_grad_norm_error_if_nonfinite_reads_the_norm(gpu_device):
    p = nn.Parameter(np.zeros(2)).to(gpu_device)
    p.grad = autograd.tensor(np.array([1.0, np.nan]), device=gpu_device)
    assert np.isnan(host(nn.utils.clip_grad_norm_([p], 1.0)))
    with pytest.raises(RuntimeError, match="nan"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    empty = nn.utils.clip_grad_norm_([nn.Parameter(np.zeros(2)).to(gpu_device)], 1.0)
    assert empty.item() == 0.0


# ---- parallel slices ------------------------------------------------------------------------


def _slice_losses(x, target, slices, device):
    size = len(x) // slices
    return [lambda model, part=slice(i * size, (i + 1) * size):
            ((model(autograd.tensor(x[part], device=device))
              - autograd.tensor(target[part], device=device)) ** 2).mean() / slices
            for i in range(slices)]


def test_replicas_on_a_gpu_run_in_order_on_the_calling_thread(gpu_device):
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((6, 2, 5, 5)), rng.standard_normal((6, 1, 5, 5))
    cpu_net = small_net()
    cpu_values = Replicas(cpu_net, 3).backward(_slice_losses(x, target, 3, "cpu"), workers=2)
    net = small_net()
    replicas = Replicas(net, 3)  # built on the CPU; the module moves after
    net.to(gpu_device)
    values = replicas.backward(_slice_losses(x, target, 3, gpu_device), workers=3)
    np.testing.assert_allclose([float(v) for v in values], [float(v) for v in cpu_values],
                               **tolerance())
    per_slice = []  # each slice alone on the GPU, then summed in order 0, 1, 2
    for loss in _slice_losses(x, target, 3, gpu_device):
        net.zero_grad()
        loss(net).backward()
        per_slice.append([p.grad.data.copy() for p in net.parameters()])
    net.zero_grad()
    replicas.backward(_slice_losses(x, target, 3, gpu_device), workers=3)
    for k, (p, cpu_p) in enumerate(zip(net.parameters(), cpu_net.parameters())):
        assert p.grad.device == gpu_device
        ordered = per_slice[0][k] + per_slice[1][k] + per_slice[2][k]
        if simulated():  # bit for bit (a GPU's kernels may add atomically, in any order)
            np.testing.assert_array_equal(host(p.grad), host(ordered))
        np.testing.assert_allclose(host(p.grad), host(ordered), **tolerance())
        np.testing.assert_allclose(host(p.grad), cpu_p.grad.numpy(), **tolerance())


def test_parallel_apply_and_sliced_forward_on_a_gpu(gpu_device):
    net = small_net().to(gpu_device)
    x = np.random.default_rng(2).standard_normal((5, 2, 4, 4))
    expected = host(net(autograd.tensor(x, device=gpu_device)))
    threads = []

    def recording(t):
        threads.append(threading.current_thread())
        return net(t)

    with autograd.no_grad():
        parts = [(autograd.tensor(x[:2], device=gpu_device),),
                 (autograd.tensor(x[2:], device=gpu_device),)]
        outputs = parallel_apply([recording, recording], parts, workers=2)
        whole = sliced_forward(net, 3)(autograd.tensor(x, device=gpu_device))
    assert threads == [threading.current_thread()] * 2
    assert all(o.device == gpu_device for o in outputs)
    np.testing.assert_allclose(np.concatenate([host(o) for o in outputs]), expected,
                               **tolerance())
    assert device_of(whole) == gpu_device
    np.testing.assert_allclose(host(whole), expected, **tolerance())


# ---- save and load --------------------------------------------------------------------------


def _train(model, steps, device, optimizer=None, ema=None):
    rng = np.random.default_rng(11)
    optimizer = optimizer or optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ema = ema or optim.EMAModel(model.parameters(), decay=0.9)
    for _ in range(steps):
        x = autograd.tensor(rng.standard_normal((4, 2, 5, 5)), device=device)
        loss = (model(x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        ema.step(model.parameters())
    return optimizer, ema


def test_save_on_a_gpu_load_on_the_cpu_and_back(gpu_device, tmp_path):
    model = small_net().to(gpu_device)
    optimizer, ema = _train(model, 2, gpu_device)
    path = tmp_path / "ckpt.npz"
    autograd.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "ema": ema.state_dict(), "step": 2}, path)
    back = autograd.load(path)  # on the CPU by default
    for name, value in model.state_dict().items():
        assert back["model"][name].device == "cpu"
        np.testing.assert_array_equal(back["model"][name].numpy(), host(value))
    first = back["optimizer"]["state"][0]
    assert isinstance(first["exp_avg"], np.ndarray) and first["step"] == 2
    assert all(isinstance(s, np.ndarray) for s in back["ema"]["shadow_params"])

    # resume on the CPU from the GPU's checkpoint, and on the GPU from a CPU checkpoint:
    # both continue exactly as the uninterrupted GPU run
    cpu_model = small_net()
    cpu_model.load_state_dict(back["model"])
    cpu_optimizer = optim.AdamW(cpu_model.parameters(), lr=1e-2, weight_decay=0.1)
    cpu_optimizer.load_state_dict(back["optimizer"])
    cpu_ema = optim.EMAModel(cpu_model.parameters(), decay=0.9)
    cpu_ema.load_state_dict(back["ema"])
    _train(cpu_model, 1, "cpu", cpu_optimizer, cpu_ema)
    autograd.save({"model": cpu_model.state_dict(), "optimizer": cpu_optimizer.state_dict(),
                   "ema": cpu_ema.state_dict()}, path)
    for location in (dict(map_location=gpu_device), dict(device=gpu_device)):
        again = autograd.load(path, **location)
        assert all(t.device == gpu_device for t in again["model"].values())
        assert device_of(again["optimizer"]["state"][0]["exp_avg"]) == gpu_device
    resumed = small_net().to(gpu_device)
    resumed.load_state_dict(again["model"])
    resumed_optimizer = optim.AdamW(resumed.parameters(), lr=1e-2, weight_decay=0.1)
    resumed_optimizer.load_state_dict(again["optimizer"])
    resumed_ema = optim.EMAModel(resumed.parameters(), decay=0.9)
    resumed_ema.load_state_dict(again["ema"])

    _train(model, 1, gpu_device, optimizer, ema)  # the straight run: 3 steps on the GPU
    for mine, straight in zip(cpu_model.parameters(), model.parameters()):
        np.testing.assert_allclose(mine.numpy(), host(straight), **tolerance())
    for mine, straight in zip(resumed.parameters(), cpu_model.parameters()):
        np.testing.assert_array_equal(host(mine), straight.numpy())
    for a, b in zip(resumed_ema.shadow_params, ema.shadow_params):
        assert device_of(a) == gpu_device
        np.testing.assert_allclose(host(a), host(b), **tolerance())
    with pytest.raises(ValueError, match="disagree"):
        autograd.load(path, map_location="cpu", device=gpu_device)
    with pytest.raises(TypeError, match="map_location"):
        autograd.load(path, map_location={"cuda:0": "cpu"})
