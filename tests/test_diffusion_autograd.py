"""The diffusion core driving autograd models: the loss is a differentiable float32 Tensor,
and samplers accept models that return Tensors."""

from __future__ import annotations

import numpy as np

import autograd
from autograd import nn
from tinydiff.diffusion import training_loss
from tinydiff.samplers import sample
from tinydiff.schedules import NoiseSchedule


class FlatModel(nn.Module):
    """A stand-in denoiser: an MLP over flattened pixels plus a timestep feature."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(size + 1, 16), nn.SiLU(), nn.Linear(16, size))

    def forward(self, x, t):
        x = x if isinstance(x, autograd.Tensor) else autograd.Tensor(x)
        features = np.asarray(t, np.float32)[:, None] / 1000.0
        flat = autograd.cat([x.reshape(x.shape[0], -1), autograd.Tensor(features)], dim=1)
        return self.net(flat).reshape(x.shape)


def test_training_loss_is_a_float32_tensor_that_backpropagates():
    schedule = NoiseSchedule()
    model = FlatModel(4)
    x0 = np.random.default_rng(0).uniform(-1, 1, (8, 1, 2, 2)).astype(np.float32)
    for prediction_type in ("epsilon", "sample", "v_prediction"):
        for weighting in ("uniform", "min_snr"):
            model.zero_grad()
            loss = training_loss(model, schedule, x0, np.random.default_rng(1),
                                 prediction_type=prediction_type, loss_weighting=weighting)
            assert isinstance(loss, autograd.Tensor) and loss.dtype == np.float32
            loss.backward()
            assert all(p.grad is not None and np.all(np.isfinite(p.grad.numpy()))
                       for p in model.parameters())


def test_samplers_accept_models_returning_tensors():
    schedule = NoiseSchedule(num_train_timesteps=50)
    model = FlatModel(4)
    with autograd.no_grad():
        x = sample(model, schedule, (3, 1, 2, 2), sampler="ddim", num_inference_steps=5,
                   generator=np.random.default_rng(0))
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (3, 1, 2, 2)
    assert np.all(np.isfinite(x))
