"""Tests for tinydiff.diffusion: forward process, conversions, loss and variational bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinydiff.diffusion import (
    convert_prediction,
    discretized_gaussian_log_likelihood,
    gather,
    min_snr_weights,
    model_log_variance,
    normal_kl,
    predict_x0_and_eps,
    prediction_target,
    prior_bpd,
    q_mean_variance,
    q_posterior,
    q_sample,
    standard_normal_cdf,
    standard_normal_sf,
    training_loss,
    training_losses,
    variational_bound,
)
from tinydiff.options import BetaSchedule, PredictionType
from tinydiff.schedules import NoiseSchedule

SCHEDULE = NoiseSchedule(50)
schedule_names = st.sampled_from(BetaSchedule.values())


def batch_and_timesteps(schedule, seed, shape=(6, 2, 3), dtype=np.float64):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, shape).astype(dtype)
    noise = rng.standard_normal(shape).astype(dtype)
    t = rng.integers(0, schedule.num_train_timesteps, shape[0])
    return x0, noise, t


# ----------------------------------------------------------------------------- forward process


def test_gather_shape_and_dtype() -> None:
    x = np.zeros((3, 2, 5, 5), dtype=np.float32)
    coef = gather(SCHEDULE.sqrt_alphas_cumprod, np.array([0, 4, 49]), x)
    assert coef.shape == (3, 1, 1, 1) and coef.dtype == np.float32
    np.testing.assert_allclose(coef.ravel(), SCHEDULE.sqrt_alphas_cumprod[[0, 4, 49]], rtol=1e-7)


@given(name=schedule_names, num_train_timesteps=st.integers(2, 200))
def test_closed_form_equals_iterated_chain(name: str, num_train_timesteps: int) -> None:
    schedule = NoiseSchedule(num_train_timesteps, beta_schedule=name)
    x0 = np.array([[-0.7], [0.3]])
    mean, variance = x0.copy(), 0.0
    for t in range(num_train_timesteps):
        # one step: x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z
        mean = math.sqrt(schedule.alphas[t]) * mean
        variance = schedule.alphas[t] * variance + schedule.betas[t]
        closed_mean, closed_variance = q_mean_variance(schedule, x0, np.array([t, t]))
        np.testing.assert_allclose(closed_mean, mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(closed_variance.ravel(), variance, rtol=1e-12, atol=1e-14)


def test_closed_form_matches_chain_samples_statistically() -> None:
    schedule = NoiseSchedule(40, beta_schedule="squaredcos_cap_v2")
    rng = np.random.default_rng(0)
    n, x0 = 40_000, 0.6
    x = np.full(n, x0)
    for t in range(schedule.num_train_timesteps):
        x = math.sqrt(schedule.alphas[t]) * x + math.sqrt(schedule.betas[t]) * rng.standard_normal(
            n
        )
    direct = q_sample(
        schedule, np.full((n, 1), x0), np.full(n, 39), rng.standard_normal((n, 1))
    ).ravel()
    mean, variance = schedule.sqrt_alphas_cumprod[-1] * x0, 1 - schedule.alphas_cumprod[-1]
    for draws in (x, direct):
        assert abs(draws.mean() - mean) < 4 * math.sqrt(variance / n)
        assert abs(draws.var() - variance) < 4 * variance * math.sqrt(2 / n)


@given(name=schedule_names, seed=st.integers(0, 2**32 - 1))
def test_posterior_equals_bayes_rule(name: str, seed: int) -> None:
    schedule = NoiseSchedule(100, beta_schedule=name)
    x0, x_t, t = batch_and_timesteps(schedule, seed)
    t = np.maximum(t, 1)
    mean, variance, log_variance = q_posterior(schedule, x0, x_t, t)
    # Prior q(x_{t-1} | x0) = N(a x0, 1 - abar_{t-1}) times likelihood q(x_t | x_{t-1}) =
    # N(sqrt(alpha_t) x_{t-1}, beta_t): multiply the two Gaussians in x_{t-1}.
    prior_mean = np.sqrt(schedule.alphas_cumprod[t - 1])[:, None, None] * x0
    prior_var = (1 - schedule.alphas_cumprod[t - 1])[:, None, None]
    alpha, beta = schedule.alphas[t][:, None, None], schedule.betas[t][:, None, None]
    precision = 1 / prior_var + alpha / beta
    bayes_mean = (prior_mean / prior_var + np.sqrt(alpha) * x_t / beta) / precision
    np.testing.assert_allclose(mean, bayes_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(variance, 1 / precision, rtol=1e-10)
    np.testing.assert_allclose(log_variance, np.log(1 / precision), rtol=1e-10, atol=1e-12)


def test_posterior_at_t0_is_the_data() -> None:
    x0, x_t, _ = batch_and_timesteps(SCHEDULE, 1)
    t = np.zeros(len(x0), dtype=np.int64)
    mean, variance, log_variance = q_posterior(SCHEDULE, x0, x_t, t)
    np.testing.assert_allclose(mean, x0, rtol=1e-12)
    assert np.all(variance == 0)
    assert np.all(log_variance == np.log(SCHEDULE.posterior_variance[1]))


# ----------------------------------------------------------------------------- conversions


@given(
    name=schedule_names,
    seed=st.integers(0, 2**32 - 1),
    from_type=st.sampled_from(PredictionType.values()),
    to_type=st.sampled_from(PredictionType.values()),
)
def test_conversions_round_trip(name: str, seed: int, from_type: str, to_type: str) -> None:
    schedule = NoiseSchedule(1000, beta_schedule=name)
    x0, eps, _ = batch_and_timesteps(schedule, seed, shape=(1000, 3))
    t = np.arange(1000)  # every timestep
    x_t = q_sample(schedule, x0, t, eps)
    truth = {p: prediction_target(schedule, x0, eps, t, p) for p in PredictionType.values()}
    converted = convert_prediction(schedule, x_t, t, truth[from_type], from_type, to_type)
    np.testing.assert_allclose(converted, truth[to_type], rtol=1e-9, atol=1e-9)
    back = convert_prediction(schedule, x_t, t, converted, to_type, from_type)
    np.testing.assert_allclose(back, truth[from_type], rtol=1e-9, atol=1e-9)


def test_v_definition() -> None:
    x0, eps, t = batch_and_timesteps(SCHEDULE, 2)
    v = prediction_target(SCHEDULE, x0, eps, t, "v_prediction")
    a = SCHEDULE.alphas_cumprod[t][:, None, None]
    np.testing.assert_allclose(v, np.sqrt(a) * eps - np.sqrt(1 - a) * x0, rtol=1e-14)
    x_t = q_sample(SCHEDULE, x0, t, eps)
    x0_back, eps_back = predict_x0_and_eps(SCHEDULE, x_t, t, v, "v_prediction")
    np.testing.assert_allclose(x0_back, x0, atol=1e-12)
    np.testing.assert_allclose(eps_back, eps, atol=1e-12)


def test_float32_stays_float32() -> None:
    x0, eps, t = batch_and_timesteps(SCHEDULE, 3, dtype=np.float32)
    x_t = q_sample(SCHEDULE, x0, t, eps)
    assert x_t.dtype == np.float32
    for p in PredictionType.values():
        target = prediction_target(SCHEDULE, x0, eps, t, p)
        assert target.dtype == np.float32
        for q in PredictionType.values():
            assert convert_prediction(SCHEDULE, x_t, t, target, p, q).dtype == np.float32
    assert all(a.dtype == np.float32 for a in q_posterior(SCHEDULE, x0, x_t, t))
    for weighting in ("uniform", "min_snr"):
        loss = training_loss(
            lambda x, t: 0.5 * x, SCHEDULE, x0, np.random.default_rng(0), loss_weighting=weighting
        )
        assert loss.dtype == np.float32


# ----------------------------------------------------------------------------- training loss


@pytest.mark.parametrize("prediction_type", PredictionType.values())
@pytest.mark.parametrize("weighting", ["uniform", "min_snr"])
def test_training_loss_matches_manual_computation(prediction_type: str, weighting: str) -> None:
    schedule = NoiseSchedule(100, rescale_betas_zero_snr=True)
    x0 = np.random.default_rng(5).uniform(-1, 1, (16, 3, 2))
    seen = {}

    def model(x_t, t, scale):
        seen.update(x_t=x_t, t=t)
        return scale * x_t

    loss = training_loss(
        model, schedule, x0, np.random.default_rng(9), prediction_type, weighting, 5.0, scale=0.3
    )
    rng = np.random.default_rng(9)  # replay the draws: t first, then the noise
    t = rng.integers(0, 100, 16)
    noise = rng.standard_normal(x0.shape)
    np.testing.assert_array_equal(seen["t"], t)
    a = schedule.alphas_cumprod[t][:, None, None]
    np.testing.assert_allclose(seen["x_t"], np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, atol=1e-15)
    target = {
        "epsilon": noise,
        "sample": x0,
        "v_prediction": np.sqrt(a) * noise - np.sqrt(1 - a) * x0,
    }
    per_sample = ((0.3 * seen["x_t"] - target[prediction_type]) ** 2).mean(axis=(1, 2))
    weights = np.ones(16)
    if weighting == "min_snr":
        snr = a.ravel() / (1 - a.ravel())
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = {
                "epsilon": np.where(snr > 0, np.minimum(snr, 5.0) / snr, 1.0),
                "v_prediction": np.minimum(snr, 5.0) / (snr + 1),
                "sample": np.minimum(snr, 5.0),
            }[prediction_type]
    np.testing.assert_allclose(loss, (weights * per_sample).mean(), rtol=1e-12)


def test_training_loss_takes_given_timesteps_and_noise() -> None:
    # what the trainer does: the batch's draws made once, then cut into slices
    schedule = NoiseSchedule(50)
    x0 = np.random.default_rng(0).uniform(-1, 1, (6, 3))
    t, noise = np.array([0, 3, 10, 20, 30, 49]), np.random.default_rng(1).standard_normal((6, 3))
    seen = {}

    def model(x_t, t_seen):
        seen.update(x_t=x_t, t=t_seen)
        return 0.5 * x_t

    losses = [training_losses(model, schedule, x0, np.random.default_rng(seed), timesteps=t,
                              noise=noise).loss for seed in (2, 3)]
    assert losses[0] == losses[1]  # the generator drew nothing
    a = schedule.alphas_cumprod[t][:, None]
    np.testing.assert_array_equal(seen["t"], t)
    np.testing.assert_allclose(seen["x_t"], np.sqrt(a) * x0 + np.sqrt(1 - a) * noise,
                               atol=1e-15)
    np.testing.assert_allclose(losses[0], ((0.5 * seen["x_t"] - noise) ** 2).mean(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"noise has shape \(6, 2\), expected x0's \(6, 3\)"):
        training_losses(model, schedule, x0, np.random.default_rng(0), noise=noise[:, :2])


def test_min_snr_weights_formula() -> None:
    snr = np.array([0.0, 0.5, 5.0, 100.0])
    np.testing.assert_allclose(min_snr_weights(snr, 5.0, "epsilon"), [1, 1, 1, 0.05])
    np.testing.assert_allclose(min_snr_weights(snr, 5.0, "sample"), [0, 0.5, 5, 5])
    np.testing.assert_allclose(
        min_snr_weights(snr, 5.0, "v_prediction"), [0, 0.5 / 1.5, 5 / 6, 5 / 101]
    )
    with pytest.raises(ValueError, match="snr_gamma"):
        min_snr_weights(snr, 0.0, "epsilon")


class FakeTensor:
    """Minimal stand-in for an autograd Tensor: arithmetic, .mean(), .shape and __array__."""

    def __init__(self, data):
        self.data = np.asarray(data)
        self.shape = self.data.shape

    def __add__(self, other):
        return FakeTensor(self.data + np.asarray(getattr(other, "data", other), self.data.dtype))

    def __sub__(self, other):
        return FakeTensor(self.data - np.asarray(getattr(other, "data", other), self.data.dtype))

    def __mul__(self, other):
        return FakeTensor(self.data * np.asarray(getattr(other, "data", other), self.data.dtype))

    def mean(self):
        return FakeTensor(self.data.mean())

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)


def test_training_loss_accepts_tensor_outputs() -> None:
    x0 = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32)
    for weighting in ("uniform", "min_snr"):
        loss = training_loss(
            lambda x, t: FakeTensor(x * 0.5),
            SCHEDULE,
            x0,
            np.random.default_rng(1),
            loss_weighting=weighting,
        )
        reference = training_loss(
            lambda x, t: x * 0.5, SCHEDULE, x0, np.random.default_rng(1), loss_weighting=weighting
        )
        assert isinstance(loss, FakeTensor) and loss.data.dtype == np.float32
        np.testing.assert_allclose(loss.data, reference, rtol=1e-6)


def test_oracle_model_has_zero_loss() -> None:
    x0 = np.random.default_rng(0).uniform(-1, 1, (8, 4))
    schedule = NoiseSchedule(30)

    def oracle(x_t, t):  # knows x0, so recovers the noise exactly
        a = schedule.alphas_cumprod[t][:, None]
        return (x_t - np.sqrt(a) * x0) / np.sqrt(1 - a)

    assert training_loss(oracle, schedule, x0, np.random.default_rng(0)) < 1e-24


# ----------------------------------------------------------------------------- errors


def test_clear_errors() -> None:
    x0, eps, t = batch_and_timesteps(SCHEDULE, 0)
    with pytest.raises(ValueError, match="prediction_type"):
        prediction_target(SCHEDULE, x0, eps, t, "eps")
    with pytest.raises(ValueError, match="prediction_type"):
        convert_prediction(SCHEDULE, x0, t, eps, "epsilon", "x0")
    with pytest.raises(ValueError, match="variance_type"):
        model_log_variance(SCHEDULE, "learned")
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        q_sample(SCHEDULE, x0, np.full(len(x0), 50), eps)
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        q_sample(SCHEDULE, x0, np.full(len(x0), -1), eps)
    with pytest.raises(ValueError, match="shape"):
        q_sample(SCHEDULE, x0, t[:-1], eps)
    with pytest.raises(ValueError, match="integer"):
        q_sample(SCHEDULE, x0, t.astype(float), eps)
    with pytest.raises(ValueError, match="noise has shape"):
        q_sample(SCHEDULE, x0, t, eps[:, :1])
    with pytest.raises(ValueError, match="x0 has shape"):
        q_posterior(SCHEDULE, x0[:, :1], x0, t)
    with pytest.raises(ValueError, match="loss_weighting"):
        training_loss(lambda x, t: x, SCHEDULE, x0, np.random.default_rng(0), loss_weighting="snr")
    with pytest.raises(ValueError, match="model output has shape"):
        training_loss(lambda x, t: x[:, :1], SCHEDULE, x0, np.random.default_rng(0))


# ----------------------------------------------------------------------------- likelihood


@given(z=st.floats(-30, 30))
def test_normal_cdf_matches_math_erf(z: float) -> None:
    expected = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert standard_normal_cdf(np.array([z]))[0] == pytest.approx(expected, rel=1e-14, abs=1e-16)
    assert standard_normal_sf(np.array([z]))[0] == pytest.approx(1 - expected, abs=1e-15)


def test_normal_kl_against_numerical_integration() -> None:
    grid = np.linspace(-20, 20, 400_001)
    mean1, var1, mean2, var2 = 0.3, 0.5, -0.4, 2.0

    def density(mean, var):
        return np.exp(-((grid - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)

    p, q = density(mean1, var1), density(mean2, var2)
    numeric = np.trapezoid(p * (np.log(p) - np.log(q)), grid)
    assert normal_kl(mean1, np.log(var1), mean2, np.log(var2)) == pytest.approx(numeric, rel=1e-8)
    assert normal_kl(mean1, np.log(var1), mean1, np.log(var1)) == 0.0


BIN_CENTERS = np.arange(256) / 127.5 - 1
BIN_EDGES = np.concatenate([[-np.inf], (np.arange(255) + 0.5) / 127.5 - 1, [np.inf]])


def bin_probability(lower: float, upper: float, mean: float, std: float) -> float:
    """P(lower < X < upper) for X ~ N(mean, std^2) by math.erfc, taken in the nearer tail."""
    a, b = (lower - mean) / (std * math.sqrt(2)), (upper - mean) / (std * math.sqrt(2))
    if a > 0:
        return 0.5 * (math.erfc(a) - math.erfc(b))
    return 0.5 * (math.erfc(-b) - math.erfc(-a))


def bin_probabilities(mean: float, std: float) -> np.ndarray:
    """P(bin) of N(mean, std^2) for all 256 bins."""
    return np.array([bin_probability(*BIN_EDGES[k : k + 2], mean, std) for k in range(256)])


@pytest.mark.parametrize(("mean", "std"), [(0.0, 0.3), (0.95, 0.01), (-0.9, 0.2), (0.2, 1e-3)])
def test_discretized_likelihood(mean: float, std: float) -> None:
    log_p = discretized_gaussian_log_likelihood(BIN_CENTERS, np.full(256, mean), np.log(std))
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-12)
    expected = bin_probabilities(mean, std)
    big = expected > 1e-10
    np.testing.assert_allclose(np.exp(log_p[big]), expected[big], rtol=1e-9)


# The exact denoiser of Gaussian data N(MU, S^2): everything is linear-Gaussian, so the model's
# likelihood and the expected bound can be computed exactly and compared with the Monte Carlo
# estimate from `variational_bound`.
MU, S = 0.1, 0.25


def gaussian_x0_gain(schedule, t):
    """E[x0 | x_t] = MU + gain_t * (x_t - sqrt(abar_t) MU)."""
    a = schedule.alphas_cumprod[t]
    return np.sqrt(a) * S**2 / (a * S**2 + 1 - a)


def gaussian_eps_oracle(schedule):
    def model(x_t, t):
        a = schedule.alphas_cumprod[t][:, None]
        x0 = MU + gaussian_x0_gain(schedule, t)[:, None] * (x_t - np.sqrt(a) * MU)
        return (x_t - np.sqrt(a) * x0) / np.sqrt(1 - a)

    return model


def model_mean_affine(schedule, t):
    """The model mean of p(x_{t-1} | x_t) written as A_t x_t + b_t."""
    gain, a = gaussian_x0_gain(schedule, t), schedule.alphas_cumprod[t]
    coef1, coef2 = schedule.posterior_mean_coef1[t], schedule.posterior_mean_coef2[t]
    return coef1 * gain + coef2, coef1 * (MU - gain * np.sqrt(a) * MU)


def exact_model_bin_probabilities(schedule, variance_type):
    """P_model(bin): push N(0, 1) through the T Gaussian reverse steps, then discretize."""
    log_variances = model_log_variance(schedule, variance_type)
    mean, var = 0.0, 1.0
    for t in range(schedule.num_train_timesteps - 1, 0, -1):
        slope, offset = model_mean_affine(schedule, t)
        mean, var = slope * mean + offset, slope**2 * var + np.exp(log_variances[t])
    slope, offset = model_mean_affine(schedule, 0)  # decoder input x_0 (noisy) -> data
    return bin_probabilities(
        slope * mean + offset, math.sqrt(slope**2 * var + np.exp(log_variances[0]))
    )


def expected_bound_bits(schedule, variance_type, x0):
    """E over the forward noise of the bound for one pixel value x0, in bits (independent code)."""
    a, log_variances = schedule.alphas_cumprod, model_log_variance(schedule, variance_type)
    t = np.arange(1, schedule.num_train_timesteps)
    slope, offset = model_mean_affine(schedule, t)
    coef1, coef2 = schedule.posterior_mean_coef1[t], schedule.posterior_mean_coef2[t]
    # mean difference (coef1 x0 + coef2 x_t) - (slope x_t + offset) is affine in x_t
    x_t_mean, x_t_var = np.sqrt(a[t]) * x0, 1 - a[t]
    diff_mean = coef1 * x0 + (coef2 - slope) * x_t_mean - offset
    diff_second_moment = diff_mean**2 + (coef2 - slope) ** 2 * x_t_var
    true_log_var, model_log_var = np.log(schedule.posterior_variance[t]), log_variances[t]
    kls = 0.5 * (
        -1
        + model_log_var
        - true_log_var
        + np.exp(true_log_var - model_log_var)
        + diff_second_moment * np.exp(-model_log_var)
    )
    prior = 0.5 * (-1 - np.log(1 - a[-1]) + (1 - a[-1]) + a[-1] * x0**2)
    # decoder: Gauss-Hermite quadrature over x_0(noisy) ~ N(sqrt(abar_0) x0, 1 - abar_0)
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    slope0, offset0 = model_mean_affine(schedule, 0)
    means = slope0 * (np.sqrt(a[0]) * x0 + np.sqrt(1 - a[0]) * nodes) + offset0
    index = int(round((x0 + 1) * 127.5))
    std0 = math.sqrt(np.exp(log_variances[0]))
    probabilities = [bin_probability(*BIN_EDGES[index : index + 2], m, std0) for m in means]
    decoder = -(weights * np.log(probabilities)).sum() / weights.sum()
    return (kls.sum() + prior + decoder) / math.log(2)


@pytest.mark.parametrize("variance_type", ["fixed_large", "fixed_small"])
def test_variational_bound_of_gaussian_oracle(variance_type: str) -> None:
    schedule = NoiseSchedule(1000)
    # 1. The data: 8-bit pixels of N(MU, S^2); exact discrete entropy by integrating the density.
    data_probabilities = bin_probabilities(MU, S)
    entropy = -(data_probabilities * np.log2(data_probabilities)).sum()
    # With 127.5 * S = 32 bins per std, the discrete entropy equals the differential entropy in
    # [0, 255] units up to the O((bin / std)^2) midpoint error (~1e-3 bits).
    assert entropy == pytest.approx(
        0.5 * math.log2(2 * math.pi * math.e * (127.5 * S) ** 2), abs=2e-3
    )
    # 2. The exact model NLL (cross-entropy) is within 1e-3 bits of that entropy.
    model_probabilities = exact_model_bin_probabilities(schedule, variance_type)
    cross_entropy = -(data_probabilities * np.log2(model_probabilities)).sum()
    assert entropy <= cross_entropy < entropy + 1e-3
    # 3. Monte Carlo bound per image (3 pixel values, 600 noise draws each) against its exact
    #    expectation: agree within 4 standard errors, and never below the exact model NLL.
    pixels = BIN_CENTERS[[100, 140, 170]]
    x0 = np.tile(pixels, (600, 1))
    bound = variational_bound(
        gaussian_eps_oracle(schedule),
        schedule,
        x0,
        np.random.default_rng(0),
        variance_type=variance_type,
        clip_denoised=False,
    )
    assert bound.terms.shape == (600, 1000) and bound.total.shape == (600,)
    np.testing.assert_allclose(bound.total, bound.prior + bound.terms.sum(axis=1))
    expected = np.mean([expected_bound_bits(schedule, variance_type, p) for p in pixels])
    standard_error = bound.total.std() / math.sqrt(len(x0))
    assert abs(bound.total.mean() - expected) < 4 * standard_error
    indices = [100, 140, 170]
    model_nll = -np.log2(model_probabilities[indices]).mean()
    assert expected > model_nll
    # fixed_large is close to tight (its decoder variance beta_tilde_1 ~ beta_0 / 2 costs ~0.1
    # bit); fixed_small underestimates every reverse variance at small t and costs ~0.7 bit.
    assert expected - model_nll < (0.15 if variance_type == "fixed_large" else 0.8)


def test_prior_bpd() -> None:
    schedule = NoiseSchedule(10)
    x0 = np.array([[0.5, -0.5]])
    a = schedule.alphas_cumprod[-1]
    kl = 0.5 * (-1 - np.log(1 - a) + (1 - a) + a * 0.25)
    assert prior_bpd(schedule, x0)[0] == pytest.approx(kl / math.log(2), rel=1e-12)
