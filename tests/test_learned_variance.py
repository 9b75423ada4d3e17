"""Learned variance (improved DDPM): the hybrid loss, its gradients, the variance range, the
sampler and the bound with `learned_range`, and importance sampling of timesteps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_testing import arrays, check_op

import autograd
from tinydiff.diffusion import (
    discretized_gaussian_log_likelihood,
    p_log_variance,
    training_losses,
    variational_bound,
)
from tinydiff.samplers import DDPMSampler, model_prediction, sample
from tinydiff.schedules import NoiseSchedule
from tinydiff.timestep_sampling import LossSecondMomentResampler

SCHEDULE = NoiseSchedule(10)


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def hand_hybrid_loss(x0, t, noise, eps_pred, v, betas, vlb_weight):
    """improved DDPM's L_simple + lambda * T * L_t, element by element with math only."""
    alphas_cumprod = np.cumprod(1 - betas)
    total_simple, total_vlb, count = 0.0, 0.0, x0[0].size
    for i in range(len(x0)):
        step = int(t[i])
        beta, abar = betas[step], alphas_cumprod[step]
        abar_prev = alphas_cumprod[step - 1] if step > 0 else 1.0
        posterior_var = beta * (1 - abar_prev) / (1 - abar)
        clipped = posterior_var if step > 0 else betas[1] * (1 - alphas_cumprod[0]) / (
            1 - alphas_cumprod[1])
        coef1 = beta * math.sqrt(abar_prev) / (1 - abar)
        coef2 = (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar)
        term = 0.0
        for x, n, e, raw in zip(x0[i].ravel(), noise[i].ravel(), eps_pred[i].ravel(),
                                v[i].ravel()):
            total_simple += (e - n) ** 2
            x_t = math.sqrt(abar) * x + math.sqrt(1 - abar) * n
            pred_x0 = (x_t - math.sqrt(1 - abar) * e) / math.sqrt(abar)
            model_mean = coef1 * pred_x0 + coef2 * x_t
            frac = (raw + 1) / 2
            log_var = frac * math.log(beta) + (1 - frac) * math.log(clipped)
            if step == 0:
                std = math.exp(0.5 * log_var)
                upper = math.inf if x > 0.999 else (x + 1 / 255 - model_mean) / std
                lower = -math.inf if x < -0.999 else (x - 1 / 255 - model_mean) / std
                term += -math.log(normal_cdf(upper) - normal_cdf(lower))
            else:
                true_mean = coef1 * x + coef2 * x_t
                term += 0.5 * (-1 + log_var - math.log(posterior_var)
                               + posterior_var / math.exp(log_var)
                               + (true_mean - model_mean) ** 2 / math.exp(log_var))
        total_vlb += term / count / math.log(2)
    n = len(x0)
    return total_simple / (n * count) + vlb_weight * len(betas) * total_vlb / n


def test_hybrid_loss_equals_its_definition():
    rng = np.random.default_rng(3)
    x0 = np.array([[[[-1.0, 1.0 / 127.5 - 1, 0.0 + 0.5 / 127.5, 1.0]]],
                   [[[-0.2, 0.6, 1.0, -1.0]]]]).round(6)
    x0 = np.round((x0 + 1) * 127.5) / 127.5 - 1  # on the 8-bit grid
    t = np.array([0, 6])
    eps_pred = rng.standard_normal(x0.shape) * 0.5
    v = rng.uniform(-1, 1, x0.shape)
    output = np.concatenate([eps_pred, v], axis=1)
    terms = training_losses(lambda x, steps: output, SCHEDULE, x0, np.random.default_rng(9),
                            variance_type="learned_range", timesteps=t)
    noise = np.random.default_rng(9).standard_normal(x0.shape)
    expected = hand_hybrid_loss(x0, t, noise, eps_pred, v, SCHEDULE.betas, 0.001)
    assert float(terms.loss) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(terms.t, t)
    assert terms.vlb.shape == (2,) and np.all(terms.vlb > 0)


def test_hybrid_loss_gradient_and_stop_gradient_on_the_mean():
    rng = np.random.default_rng(0)
    x0 = np.round(rng.uniform(-1, 1, (3, 1, 2, 2)) * 127.5) / 127.5
    t = np.array([0, 4, 9])

    def loss_of(output, variance_type="learned_range"):
        return training_losses(lambda x, steps: output, SCHEDULE, x0, np.random.default_rng(1),
                               variance_type=variance_type, timesteps=t,
                               timestep_weights=np.array([0.5, 1.0, 2.0])).loss

    output = autograd.tensor(rng.standard_normal((3, 2, 2, 2)) * 0.5, dtype=autograd.float64,
                             requires_grad=True)
    # the variance channels against finite differences (the prediction's mean path is stopped,
    # so finite differences in the prediction would see what the gradient deliberately omits)
    fixed_prediction = autograd.tensor(output.numpy()[:, :1], dtype=autograd.float64)
    assert autograd.gradcheck(
        lambda v: loss_of(autograd.cat([fixed_prediction, v], dim=1)),
        [autograd.tensor(output.numpy()[:, 1:], dtype=autograd.float64, requires_grad=True)])
    loss_of(output).backward()
    # the prediction channels get the L_simple gradient only (the mean's gradient is stopped)
    prediction = autograd.tensor(output.numpy()[:, :1], dtype=autograd.float64,
                                 requires_grad=True)
    loss_of(prediction, "fixed_small").backward()
    grad = output.grad.numpy()
    np.testing.assert_allclose(grad[:, :1], prediction.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert np.all(grad[:, 1:] != 0)


@given(data=st.data(), shape=st.sampled_from([(1,), (3,), (2, 3), (4, 1, 2)]))
@settings(deadline=None, max_examples=25)
def test_discretized_likelihood_gradient(data, shape):
    pixels = data.draw(st.lists(st.integers(0, 255), min_size=int(np.prod(shape)),
                                max_size=int(np.prod(shape))))
    x = np.asarray(pixels, dtype=np.float64).reshape(shape) / 127.5 - 1
    means = data.draw(arrays(shape, low=-1.2, high=1.2))
    log_scales = data.draw(arrays(shape, low=-4.0, high=0.5))
    check_op(lambda m, s: discretized_gaussian_log_likelihood(x, m, s), means, log_scales)


@given(t=st.integers(0, 999), v=st.floats(-1, 1))
def test_learned_variance_lies_between_beta_tilde_and_beta(t, v):
    schedule = NoiseSchedule(1000)
    like = np.zeros((1, 1, 2, 2))
    values = np.full(like.shape, v)
    variance = np.exp(p_log_variance(schedule, "learned_range", np.array([t]), like, values))
    beta_tilde = schedule.posterior_variance[max(t, 1)]  # the clipped one at t = 0
    beta = schedule.betas[t]
    low, high = min(beta_tilde, beta), max(beta_tilde, beta)
    assert np.all(variance >= low * (1 - 1e-12)) and np.all(variance <= high * (1 + 1e-12))
    if v == -1:
        np.testing.assert_allclose(variance, beta_tilde, rtol=1e-12)
    if v == 1:
        np.testing.assert_allclose(variance, beta, rtol=1e-12)


def constant_variance_model(v: float):
    """eps = 0.3 tanh(x) and a constant variance value v, as a learned-variance model."""
    def model(x, t):
        return np.concatenate([0.3 * np.tanh(x), np.full_like(x, v)], axis=1)
    return model


@pytest.mark.parametrize(("v", "fixed"), [(-1.0, "fixed_small"), (1.0, "fixed_large")])
@pytest.mark.parametrize("steps", [None, 7])
def test_learned_range_at_its_ends_samples_as_the_fixed_variances(v, fixed, steps):
    schedule = NoiseSchedule(50)
    shape = (3, 1, 4, 4)
    learned = sample(constant_variance_model(v), schedule, shape, "ddpm", steps, seed=5,
                     variance_type="learned_range", dtype=np.float64)
    reference = sample(lambda x, t: 0.3 * np.tanh(x), schedule, shape, "ddpm", steps, seed=5,
                       variance_type=fixed, dtype=np.float64)
    np.testing.assert_allclose(learned, reference, rtol=1e-10, atol=1e-12)
    # DDIM ignores the variance channels
    np.testing.assert_array_equal(
        sample(constant_variance_model(v), schedule, shape, "ddim", 5, seed=1,
               variance_type="learned_range", dtype=np.float64),
        sample(lambda x, t: 0.3 * np.tanh(x), schedule, shape, "ddim", 5, seed=1,
               dtype=np.float64))


def test_bound_with_learned_range_at_minus_one_equals_fixed_small():
    schedule = NoiseSchedule(20)
    x0 = np.round(np.random.default_rng(0).uniform(-1, 1, (2, 1, 3, 3)) * 127.5) / 127.5
    learned = variational_bound(constant_variance_model(-1.0), schedule, x0,
                                np.random.default_rng(1), variance_type="learned_range")
    fixed = variational_bound(lambda x, t: 0.3 * np.tanh(x), schedule, x0,
                              np.random.default_rng(1))
    np.testing.assert_allclose(learned.terms, fixed.terms, rtol=1e-9)
    np.testing.assert_allclose(learned.total, fixed.total, rtol=1e-9)


def test_guidance_leaves_the_variance_channels_to_the_conditional_half():
    def model(x, t, class_labels):
        label = np.asarray(class_labels, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return np.concatenate([x * 0 + label, x * 0 - label / 10], axis=1)

    x = np.zeros((2, 1, 2, 2))
    out = model_prediction(model, x, 3, {"class_labels": np.array([1, 2])}, 3.0,
                           {"class_labels": 5}, variance_type="learned_range")
    guided = np.array([5 + 3 * (1 - 5), 5 + 3 * (2 - 5)])  # uncond + s (cond - uncond)
    np.testing.assert_allclose(out[:, 0], np.broadcast_to(guided[:, None, None], (2, 2, 2)))
    np.testing.assert_allclose(out[:, 1], np.broadcast_to([[[-0.1]], [[-0.2]]], (2, 2, 2)))
    with pytest.raises(ValueError, match="variance channels"):
        model_prediction(lambda x, t: x, x, 3, {}, variance_type="learned_range")
    with pytest.raises(ValueError, match="variance values"):
        p_log_variance(SCHEDULE, "learned_range", np.array([1, 2]), x)
    with pytest.raises(ValueError, match="variance_type"):
        DDPMSampler(SCHEDULE, variance_type="learned")


# ----------------------------------------------------------------------------- timesteps


def test_resampler_is_uniform_until_every_timestep_has_its_history():
    resampler = LossSecondMomentResampler(4, history_per_term=2, uniform_prob=0.0)
    rng = np.random.default_rng(0)
    t, weights = resampler.sample(6, rng)
    np.testing.assert_array_equal(weights, np.ones(6))
    resampler.update(np.array([0, 0, 1, 1, 2, 2, 3]), np.array([1.0, 1, 2, 2, 3, 3, 4]))
    assert not resampler.warmed_up()
    resampler.update(np.array([3, 3]), np.array([4.0, 8.0]))  # the oldest 4 is dropped
    assert resampler.warmed_up()
    np.testing.assert_array_equal(resampler.loss_history[3], [4.0, 8.0])
    root_mean_square = np.sqrt([1.0, 4.0, 9.0, 40.0])
    np.testing.assert_allclose(resampler.probabilities(), root_mean_square / root_mean_square.sum())


def test_resampler_weights_keep_the_estimate_unbiased():
    resampler = LossSecondMomentResampler(5, history_per_term=1, uniform_prob=0.1)
    losses = np.array([5.0, 1.0, 0.5, 0.2, 0.1])
    resampler.update(np.arange(5), losses)
    probabilities = resampler.probabilities()
    assert probabilities.sum() == pytest.approx(1.0) and probabilities.min() >= 0.1 / 5
    t, weights = resampler.sample(200_000, np.random.default_rng(0))
    np.testing.assert_allclose(weights, 1 / (5 * probabilities[t]))
    # E_p[w L_t] is the uniform mean of L_t
    assert np.mean(weights * losses[t]) == pytest.approx(losses.mean(), rel=0.01)
    state = resampler.state_dict()
    restored = LossSecondMomentResampler(5, history_per_term=1, uniform_prob=0.1)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.probabilities(), probabilities)
    with pytest.raises(ValueError, match="finite"):
        resampler.update(np.array([1]), np.array([np.nan]))
    with pytest.raises(ValueError, match="history"):
        restored.load_state_dict({"loss_history": np.zeros((3, 1)), "loss_counts": np.zeros(3)})


@pytest.mark.parametrize("variance_type, channels", [("fixed_small", 1), ("learned_range", 2)])
@pytest.mark.parametrize("loss_weighting", ["uniform", "min_snr"])
def test_resampler_records_the_loss_before_its_own_weights(variance_type, channels,
                                                           loss_weighting):
    """As improved-diffusion's LossSecondMomentResampler: the history holds each timestep's
    loss, and only the optimised loss carries the importance weights 1 / (T p_t)."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (4, 1, 4, 4)).astype(np.float32)
    output = rng.standard_normal((4, channels, 4, 4)).astype(np.float32)
    t, weights = np.array([1, 3, 5, 9]), np.array([0.5, 2.0, 4.0, 1.0])

    def terms(timestep_weights):
        return training_losses(lambda x, t: output, SCHEDULE, x0, np.random.default_rng(1),
                               loss_weighting=loss_weighting, variance_type=variance_type,
                               timesteps=t, timestep_weights=timestep_weights)

    plain, weighted = terms(None), terms(weights)
    np.testing.assert_allclose(weighted.per_sample, plain.per_sample, rtol=1e-6)
    np.testing.assert_allclose(float(weighted.loss), np.mean(weights * plain.per_sample),
                               rtol=1e-5)
