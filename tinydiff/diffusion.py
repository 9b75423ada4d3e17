"""The forward process, prediction-type conversions, the training loss and the variational bound.

Shapes: a batch `x` is (N, ...); timesteps `t` are int arrays of shape (N,) with one training
timestep per sample. Schedule arrays are float64; every coefficient gathered at `t` is cast to
the batch's dtype by `gather` so a float32 batch stays float32. The likelihood functions
(`normal_kl`, `discretized_gaussian_log_likelihood`, `variational_bound`) work in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinydiff.schedules import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCE_TYPES = ("fixed_small", "fixed_large")
LOSS_WEIGHTINGS = ("uniform", "min_snr")


# ----------------------------------------------------------------------------- validation


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}"
        )


def check_variance_type(variance_type: str) -> None:
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(
            f"unknown variance_type {variance_type!r}; expected one of {VARIANCE_TYPES}"
        )


def check_timesteps(schedule: NoiseSchedule, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Validate per-sample timesteps t of shape (N,) against a batch x of shape (N, ...)."""
    t = np.asarray(t)
    if t.ndim != 1 or t.shape[0] != np.shape(x)[0]:
        raise ValueError(f"t must have shape (N,) = ({np.shape(x)[0]},), got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"t must be an integer array, got dtype {t.dtype}")
    if t.size and (t.min() < 0 or t.max() >= schedule.num_train_timesteps):
        raise ValueError(f"t must lie in [0, {schedule.num_train_timesteps}), got {t}")
    return t


def _check_same_shape(name: str, a: Any, x: np.ndarray) -> None:
    if tuple(np.shape(a)) != tuple(np.shape(x)):
        raise ValueError(f"{name} has shape {np.shape(a)}, expected {np.shape(x)}")


# ----------------------------------------------------------------------------- coefficients


def gather(values: np.ndarray, t: np.ndarray, like: np.ndarray) -> np.ndarray:
    """values[t] reshaped to (N, 1, ..., 1) to broadcast against `like`, in `like`'s dtype."""
    like = np.asarray(like)
    dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
    gathered = np.asarray(values)[np.asarray(t)]
    return gathered.reshape((-1,) + (1,) * (like.ndim - 1)).astype(dtype, copy=False)


# ----------------------------------------------------------------------------- forward process


def q_sample(
    schedule: NoiseSchedule, x0: np.ndarray, t: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I) using the given noise."""
    t = check_timesteps(schedule, t, x0)
    _check_same_shape("noise", noise, x0)
    return (
        gather(schedule.sqrt_alphas_cumprod, t, x0) * x0
        + gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )


def q_mean_variance(
    schedule: NoiseSchedule, x0: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (N, ...) and variance (N, 1, ..., 1) of q(x_t | x_0)."""
    t = check_timesteps(schedule, t, x0)
    mean = gather(schedule.sqrt_alphas_cumprod, t, x0) * x0
    return mean, gather(1.0 - schedule.alphas_cumprod, t, x0)


def q_posterior(
    schedule: NoiseSchedule, x0: np.ndarray, x_t: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (N, ...), variance and clipped log-variance (N, 1, ..., 1) of q(x_{t-1} | x_t, x_0)."""
    t = check_timesteps(schedule, t, x_t)
    _check_same_shape("x0", x0, x_t)
    mean = (
        gather(schedule.posterior_mean_coef1, t, x_t) * x0
        + gather(schedule.posterior_mean_coef2, t, x_t) * x_t
    )
    variance = gather(schedule.posterior_variance, t, x_t)
    log_variance = gather(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, variance, log_variance


# ----------------------------------------------------------------------------- prediction types


def predict_x0_and_eps(
    schedule: NoiseSchedule,
    x_t: np.ndarray,
    t: np.ndarray,
    model_output: np.ndarray,
    prediction_type: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(x0, eps) implied by a model output of the given prediction type at (x_t, t)."""
    check_prediction_type(prediction_type)
    t = check_timesteps(schedule, t, x_t)
    _check_same_shape("model_output", model_output, x_t)
    sqrt_abar = gather(schedule.sqrt_alphas_cumprod, t, x_t)
    sqrt_one_minus_abar = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (x_t - sqrt_one_minus_abar * eps) / sqrt_abar
    elif prediction_type == "sample":
        x0 = model_output
        eps = (x_t - sqrt_abar * x0) / sqrt_one_minus_abar
    else:  # v = sqrt(abar) eps - sqrt(1 - abar) x0
        x0 = sqrt_abar * x_t - sqrt_one_minus_abar * model_output
        eps = sqrt_one_minus_abar * x_t + sqrt_abar * model_output
    return x0, eps


def prediction_target(
    schedule: NoiseSchedule,
    x0: np.ndarray,
    eps: np.ndarray,
    t: np.ndarray,
    prediction_type: str,
) -> np.ndarray:
    """The quantity a model of the given prediction type should output for (x0, eps) at t."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    t = check_timesteps(schedule, t, x0)
    return (
        gather(schedule.sqrt_alphas_cumprod, t, x0) * eps
        - gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * x0
    )


def convert_prediction(
    schedule: NoiseSchedule,
    x_t: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    from_type: str,
    to_type: str,
) -> np.ndarray:
    """Convert a prediction at (x_t, t) between `epsilon`, `sample` (x0) and `v_prediction`."""
    check_prediction_type(to_type)
    x0, eps = predict_x0_and_eps(schedule, x_t, t, value, from_type)
    return prediction_target(schedule, x0, eps, t, to_type)


# ----------------------------------------------------------------------------- training loss


def min_snr_weights(snr: np.ndarray, gamma: float, prediction_type: str) -> np.ndarray:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the given prediction type.

    epsilon: min(snr, gamma) / snr; v_prediction: min(snr, gamma) / (snr + 1); sample:
    min(snr, gamma). The epsilon weight is written gamma / max(snr, gamma), its limit 1 at snr=0.
    """
    check_prediction_type(prediction_type)
    if not gamma > 0:
        raise ValueError(f"snr_gamma must be > 0, got {gamma}")
    clipped = np.minimum(snr, gamma)
    if prediction_type == "epsilon":
        return gamma / np.maximum(snr, gamma)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped


def training_loss(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    x0: np.ndarray,
    generator: np.random.Generator,
    prediction_type: str = "epsilon",
    loss_weighting: str = "uniform",
    snr_gamma: float = 5.0,
    **cond: Any,
) -> Any:
    """Denoising MSE for `model(x_t, t, **cond)` with t ~ U{0..T-1} and eps ~ N(0, I).

    Only `+ - *` and `.mean()` touch the model output, so an autograd Tensor output gives a
    Tensor loss. `loss_weighting` is `uniform` or `min_snr` (per-sample weights, see
    `min_snr_weights`). Returns a scalar (0-d array / float, or a Tensor).
    """
    check_prediction_type(prediction_type)
    if loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(
            f"unknown loss_weighting {loss_weighting!r}; expected one of {LOSS_WEIGHTINGS}"
        )
    x0 = np.asarray(x0)
    t = generator.integers(0, schedule.num_train_timesteps, size=x0.shape[0], dtype=np.int64)
    noise = generator.standard_normal(x0.shape, dtype=x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    target = prediction_target(schedule, x0, noise, t, prediction_type)
    output = model(x_t, t, **cond)
    _check_same_shape("model output", output, x0)
    error = output - target
    squared_error = error * error
    if loss_weighting == "min_snr":
        weights = min_snr_weights(schedule.snr, snr_gamma, prediction_type)
        # Every sample has the same size, so the mean of w * se is the weighted per-sample mean.
        squared_error = squared_error * gather(weights, t, x0)
    return squared_error.mean()


# ----------------------------------------------------------------------------- likelihood


def normal_kl(
    mean1: np.ndarray, log_var1: np.ndarray, mean2: np.ndarray, log_var2: np.ndarray
) -> np.ndarray:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))) elementwise, in nats."""
    return 0.5 * (
        -1.0
        + log_var2
        - log_var1
        + np.exp(log_var1 - log_var2)
        + (mean1 - mean2) ** 2 * np.exp(-log_var2)
    )


_erfc = np.frompyfunc(math.erfc, 1, 1)


def standard_normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z) in float64 via `math.erfc` (accurate in the lower tail)."""
    return 0.5 * _erfc(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0)).astype(np.float64)


def standard_normal_sf(z: np.ndarray) -> np.ndarray:
    """1 - Phi(z) in float64, accurate in the upper tail."""
    return standard_normal_cdf(-np.asarray(z, dtype=np.float64))


def discretized_gaussian_log_likelihood(
    x: np.ndarray, means: np.ndarray, log_scales: np.ndarray, num_bins: int = 256
) -> np.ndarray:
    """log P(bin of x) under N(means, exp(log_scales)^2), for data in [-1, 1] with `num_bins` bins.

    Bins have width 2 / (num_bins - 1) centred on the data values; the outermost edges go to
    +-inf. Probabilities are differences of CDFs taken in the tail where they are accurate.
    """
    x, means, log_scales = (np.asarray(a, dtype=np.float64) for a in (x, means, log_scales))
    half_width = 1.0 / (num_bins - 1)
    inv_scale = np.exp(-log_scales)
    lower = np.where(x <= -1.0 + 1e-6, -np.inf, (x - half_width - means) * inv_scale)
    upper = np.where(x >= 1.0 - 1e-6, np.inf, (x + half_width - means) * inv_scale)
    probability = np.where(
        lower > 0.0,
        standard_normal_sf(lower) - standard_normal_sf(upper),
        standard_normal_cdf(upper) - standard_normal_cdf(lower),
    )
    return np.log(np.maximum(probability, np.finfo(np.float64).tiny))


def model_log_variance(schedule: NoiseSchedule, variance_type: str) -> np.ndarray:
    """(T,) log-variance of p(x_{t-1} | x_t) as improved-diffusion defines it.

    fixed_small: log(beta tilde), element 0 replaced by element 1; fixed_large: log(beta), element
    0 replaced by beta tilde[1] (only the decoder term uses element 0).
    """
    check_variance_type(variance_type)
    if variance_type == "fixed_small":
        return schedule.posterior_log_variance_clipped
    return np.log(np.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]]))


@dataclass
class VariationalBound:
    """Per-image terms of the variational bound, all in bits/dim.

    total: (N,) = prior + terms.sum(1); prior: (N,) L_T; terms: (N, T), terms[:, 0] is the
    decoder NLL L_0 and terms[:, t] the KL term L_t.
    """

    total: np.ndarray
    prior: np.ndarray
    terms: np.ndarray


def _mean_over_dims(values: np.ndarray) -> np.ndarray:
    return values.reshape(values.shape[0], -1).mean(axis=1)


def prior_bpd(schedule: NoiseSchedule, x0: np.ndarray) -> np.ndarray:
    """(N,) KL(q(x_T | x_0) || N(0, I)) in bits/dim."""
    x0 = np.asarray(x0, dtype=np.float64)
    t = np.full(x0.shape[0], schedule.num_train_timesteps - 1)
    mean, variance = q_mean_variance(schedule, x0, t)
    kl = normal_kl(mean, np.log(variance), 0.0, 0.0)
    return _mean_over_dims(np.broadcast_to(kl, x0.shape)) / math.log(2.0)


def variational_bound(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    x0: np.ndarray,
    generator: np.random.Generator,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    clip_denoised: bool = True,
    **cond: Any,
) -> VariationalBound:
    """The full T-step variational bound (NLL upper bound) per image, in bits/dim.

    x0: (N, ...) 8-bit data scaled to [-1, 1]. One batched model call per timestep, with fresh
    noise from `generator`. The model mean uses the predicted x0 (clipped to [-1, 1] if
    `clip_denoised`) in the posterior formula; the variance follows `model_log_variance`.
    """
    check_prediction_type(prediction_type)
    log_variances = model_log_variance(schedule, variance_type)
    x0 = np.asarray(x0)
    batch = x0.shape[0]
    terms = np.zeros((batch, schedule.num_train_timesteps))
    x0_64 = x0.astype(np.float64)
    for step in range(schedule.num_train_timesteps):
        t = np.full(batch, step, dtype=np.int64)
        noise = generator.standard_normal(x0.shape, dtype=x0.dtype)
        x_t = q_sample(schedule, x0, t, noise)
        output = np.asarray(model(x_t, t, **cond), dtype=np.float64)
        x_t = x_t.astype(np.float64)
        pred_x0, _ = predict_x0_and_eps(schedule, x_t, t, output, prediction_type)
        if clip_denoised:
            pred_x0 = np.clip(pred_x0, -1.0, 1.0)
        model_mean, _, _ = q_posterior(schedule, pred_x0, x_t, t)
        log_variance = gather(log_variances, t, x0_64)
        if step == 0:
            nll = -discretized_gaussian_log_likelihood(x0_64, model_mean, 0.5 * log_variance)
            terms[:, 0] = _mean_over_dims(nll) / math.log(2.0)
        else:
            true_mean, _, true_log_variance = q_posterior(schedule, x0_64, x_t, t)
            kl = normal_kl(true_mean, true_log_variance, model_mean, log_variance)
            terms[:, step] = _mean_over_dims(kl) / math.log(2.0)
    prior = prior_bpd(schedule, x0_64)
    return VariationalBound(total=prior + terms.sum(axis=1), prior=prior, terms=terms)
