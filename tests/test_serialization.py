"""save/load: bit-exact round trips, atomic writes, clear errors on bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import autograd
from autograd import nn, optim


def test_round_trip_of_nested_state_is_bit_exact(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.Linear(4, 2))
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(autograd.randn(5, 3)).sum()
    loss.backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 7, "lr": 1e-3, "name": "mnist-tiny", "flag": True, "nothing": None,
        "channels": (1, 2, 2), "history": [0.5, float("nan"), float("inf")],
        "rng": np.random.default_rng(3).bit_generator.state,
        "ints": np.arange(4, dtype=np.int64),
    }
    path = tmp_path / "ckpt.npz"
    autograd.save(state, path)
    back = autograd.load(path)
    for key, value in state["model"].items():
        assert back["model"][key].dtype == value.dtype
        np.testing.assert_array_equal(back["model"][key].numpy(), value.numpy())
    assert back["step"] == 7 and isinstance(back["step"], int)
    assert back["lr"] == 1e-3 and back["name"] == "mnist-tiny" and back["flag"] is True
    assert back["nothing"] is None and back["channels"] == (1, 2, 2)
    assert back["history"][0] == 0.5 and np.isnan(back["history"][1])
    assert back["rng"] == state["rng"]
    np.testing.assert_array_equal(back["ints"], state["ints"])
    restored = optim.AdamW(model.parameters(), lr=1e-3)
    restored.load_state_dict(back["optimizer"])
    for p in model.parameters():
        np.testing.assert_array_equal(restored.state[p]["exp_avg"], opt.state[p]["exp_avg"])
        assert restored.state[p]["step"] == opt.state[p]["step"]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    autograd.save({"a": np.ones(3)}, path)

    def broken_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        autograd.save({"a": np.zeros(3)}, path)
    np.testing.assert_array_equal(autograd.load(path)["a"], np.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.npz"], "a temporary file was left behind"


def test_truncated_and_corrupt_files_give_clear_errors(tmp_path):
    path = tmp_path / "ckpt.npz"
    autograd.save({"a": np.arange(1000.0)}, path)
    data = path.read_bytes()
    (tmp_path / "short.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="short.npz.*truncated or corrupt"):
        autograd.load(tmp_path / "short.npz")
    flipped = bytearray(data)
    flipped[200] ^= 0xFF  # inside the array payload: the zip CRC catches it
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.npz"):
        autograd.load(tmp_path / "flipped.npz")
    (tmp_path / "plain.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="plain.npz"):
        autograd.load(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        autograd.load(tmp_path / "missing.npz")


def test_unsupported_objects_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="object"):
        autograd.save({"x": object()}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="keys"):
        autograd.save({(1, 2): 3}, tmp_path / "x.npz")
