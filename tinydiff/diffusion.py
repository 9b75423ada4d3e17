"""The forward process, prediction-type conversions, the training loss and the variational bound.

Shapes: a batch `x` is (N, ...); timesteps `t` are int arrays of shape (N,) with one training
timestep per sample. Schedule arrays are float64; every coefficient gathered at `t` is cast to
the batch's dtype by `gather` so a float32 batch stays float32. The likelihood functions
(`normal_kl`, `discretized_gaussian_log_likelihood`, `variational_bound`) work in float64.

Devices: batches may be NumPy arrays, CuPy arrays or Tensors on any device, and results stay
on the batch's device. Schedules and timesteps `t` live on the host (t indexes the schedule);
gathered coefficients and drawn noise are moved to the batch's device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import autograd
from autograd.backend import CPU, device_of, get_array_module, is_floating, to_device
from autograd.tensor import Tensor, as_array
from tinydiff.options import LossWeighting, PredictionType, VarianceType
from tinydiff.schedules import NoiseSchedule

# ----------------------------------------------------------------------------- validation
# The options (`tinydiff.options`) are parsed where a sampler or a TrainConfig is built; the
# functions here take a member or its string and dispatch on it, an unknown one failing in
# the dispatch with the option's own message.


def learns_variance(variance_type: VarianceType | str) -> bool:
    """Whether a model of this variance type outputs variance channels after the prediction
    (learned_range: the prediction, then v; see `learned_range_log_variance`)."""
    return VarianceType.parse(variance_type).learned


def split_model_output(output: Any, x: np.ndarray,
                       variance_type: VarianceType | str) -> tuple[Any, Any]:
    """(prediction (N, C, ...), variance values (N, C, ...) or None) of a model output.

    A learned-variance model outputs (N, 2C, ...): the prediction channels, then v."""
    if not learns_variance(variance_type):
        _check_same_shape("model output", output, x)
        return output, None
    expected = (x.shape[0], 2 * x.shape[1]) + tuple(x.shape[2:])
    if shape_of(output) != expected:
        raise ValueError(f"model output has shape {shape_of(output)}, expected {expected}"
                         f" (prediction and variance channels for variance_type "
                         f"'{variance_type}')")
    channels = x.shape[1]
    return output[:, :channels], output[:, channels:]


def check_timesteps(schedule: NoiseSchedule, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Validate per-sample timesteps t of shape (N,) against a batch x of shape (N, ...)."""
    t = np.asarray(t)
    if t.ndim != 1 or t.shape[0] != shape_of(x)[0]:
        raise ValueError(f"t must have shape (N,) = ({shape_of(x)[0]},), got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"t must be an integer array, got dtype {t.dtype}")
    if t.size and (t.min() < 0 or t.max() >= schedule.num_train_timesteps):
        raise ValueError(f"t must lie in [0, {schedule.num_train_timesteps}), got {t}")
    return t


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape of an array or Tensor on any device (np.shape would copy a GPU array)."""
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _check_same_shape(name: str, a: Any, x: np.ndarray) -> None:
    if shape_of(a) != shape_of(x):
        raise ValueError(f"{name} has shape {shape_of(a)}, expected {shape_of(x)}")


def array_of(value: Any, dtype=None):
    """The array of a Tensor, or an array on its own device; NumPy for Python values."""
    return as_array(value, None if dtype is None else np.dtype(dtype))


# ----------------------------------------------------------------------------- coefficients


def per_sample(values: np.ndarray, like: Any) -> np.ndarray:
    """values (N,) reshaped to (N, 1, ..., 1) to broadcast against `like` (an array or a
    Tensor), in `like`'s floating dtype (else float64), on `like`'s device."""
    like = array_of(like)
    dtype = like.dtype if is_floating(like.dtype) else np.float64
    values = array_of(values).reshape((-1,) + (1,) * (like.ndim - 1)).astype(dtype, copy=False)
    return to_device(values, device_of(like))


def gather(values: np.ndarray, t: np.ndarray, like: Any) -> np.ndarray:
    """values[t] reshaped to (N, 1, ..., 1) to broadcast against `like`, in `like`'s dtype,
    on `like`'s device (values and t: host arrays)."""
    return per_sample(np.asarray(values)[np.asarray(t)], like)


# ----------------------------------------------------------------------------- forward process


def q_sample(
    schedule: NoiseSchedule, x0: np.ndarray, t: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt_alphas_cumprod_t x0, (1 - alphas_cumprod_t) I) (Ho et al.
    2020, eq. 4) using the given noise."""
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
    """Mean (N, ...), variance and clipped log-variance (N, 1, ..., 1) of q(x_{t-1} | x_t, x_0)
    (Ho et al. 2020, eq. 6-7)."""
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


def x0_and_eps_from_output(
    model_output: Any, x_t: Any, alpha_t: Any, sigma_t: Any,
    prediction_type: PredictionType | str,
) -> tuple[Any, Any]:
    """(x0, eps) implied by a model output at x_t = alpha_t x0 + sigma_t eps (variance
    preserving: alpha_t^2 + sigma_t^2 = 1): the conversion every sampler uses.

    alpha_t and sigma_t: floats, or arrays that broadcast against x_t. epsilon: x0 =
    (x_t - sigma_t eps) / alpha_t; sample: eps = (x_t - alpha_t x0) / sigma_t; v_prediction
    (v = alpha_t eps - sigma_t x0): x0 = alpha_t x_t - sigma_t v, eps = sigma_t x_t + alpha_t v.
    """
    if isinstance(alpha_t, float):  # scalars in the batch's dtype (no silent promotion)
        alpha_t, sigma_t = x_t.dtype.type(alpha_t), x_t.dtype.type(sigma_t)
    if prediction_type == PredictionType.EPSILON:
        eps = model_output
        x0 = (x_t - sigma_t * eps) / alpha_t
    elif prediction_type == PredictionType.SAMPLE:
        x0 = model_output
        eps = (x_t - alpha_t * x0) / sigma_t
    elif prediction_type == PredictionType.V_PREDICTION:
        x0 = alpha_t * x_t - sigma_t * model_output
        eps = sigma_t * x_t + alpha_t * model_output
    else:
        raise PredictionType.unknown(prediction_type)
    return x0, eps


def predict_x0_and_eps(
    schedule: NoiseSchedule,
    x_t: np.ndarray,
    t: np.ndarray,
    model_output: np.ndarray,
    prediction_type: PredictionType | str,
) -> tuple[np.ndarray, np.ndarray]:
    """(x0, eps) implied by a model output of the given prediction type at (x_t, t)."""
    t = check_timesteps(schedule, t, x_t)
    _check_same_shape("model_output", model_output, x_t)
    sqrt_alphas_cumprod_t = gather(schedule.sqrt_alphas_cumprod, t, x_t)
    sqrt_one_minus_alphas_cumprod_t = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
    return x0_and_eps_from_output(model_output, x_t, sqrt_alphas_cumprod_t,
                                  sqrt_one_minus_alphas_cumprod_t, prediction_type)


def prediction_target(
    schedule: NoiseSchedule,
    x0: np.ndarray,
    eps: np.ndarray,
    t: np.ndarray,
    prediction_type: PredictionType | str,
) -> np.ndarray:
    """The quantity a model of the given prediction type should output for (x0, eps) at t:
    eps, x0, or v = sqrt_alphas_cumprod_t eps - sqrt_one_minus_alphas_cumprod_t x0."""
    if prediction_type == PredictionType.EPSILON:
        return eps
    if prediction_type == PredictionType.SAMPLE:
        return x0
    if prediction_type != PredictionType.V_PREDICTION:
        raise PredictionType.unknown(prediction_type)
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
    from_type: PredictionType | str,
    to_type: PredictionType | str,
) -> np.ndarray:
    """Convert a prediction at (x_t, t) between `epsilon`, `sample` (x0) and `v_prediction`."""
    x0, eps = predict_x0_and_eps(schedule, x_t, t, value, from_type)
    return prediction_target(schedule, x0, eps, t, to_type)


# ----------------------------------------------------------------------------- training loss


def min_snr_weights(snr: np.ndarray, gamma: float,
                    prediction_type: PredictionType | str) -> np.ndarray:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the given prediction type.

    epsilon: min(snr, gamma) / snr; v_prediction: min(snr, gamma) / (snr + 1); sample:
    min(snr, gamma). The epsilon weight is written gamma / max(snr, gamma), its limit 1 at snr=0.
    """
    if not gamma > 0:
        raise ValueError(f"snr_gamma must be > 0, got {gamma}")
    clipped = np.minimum(snr, gamma)
    if prediction_type == PredictionType.EPSILON:
        return gamma / np.maximum(snr, gamma)
    if prediction_type == PredictionType.V_PREDICTION:
        return clipped / (snr + 1.0)
    if prediction_type == PredictionType.SAMPLE:
        return clipped
    raise PredictionType.unknown(prediction_type)


@dataclass
class LossTerms:
    """One batch's training loss (a scalar, a Tensor when the model returns Tensors), its
    timesteps t (N,) and each sample's loss (N,) as a float64 array, without the
    `timestep_weights` (what loss-aware t sampling records, as improved-diffusion's
    LossSecondMomentResampler does); `vlb` (N,) the L_vlb term in bits/dim for learned
    variances, else None."""

    loss: Any
    t: np.ndarray
    per_sample: np.ndarray
    vlb: np.ndarray | None = None


def training_losses(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    x0: np.ndarray,
    generator: np.random.Generator,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
    loss_weighting: LossWeighting | str = LossWeighting.UNIFORM,
    snr_gamma: float = 5.0,
    variance_type: VarianceType | str = VarianceType.FIXED_SMALL,
    vlb_weight: float = 0.001,
    timesteps: np.ndarray | None = None,
    timestep_weights: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    **cond: Any,
) -> LossTerms:
    """Denoising loss for `model(x_t, t, **cond)` with eps ~ N(0, I) and t ~ U{0..T-1} (or
    the given `timesteps` (N,), each sample's loss then scaled by `timestep_weights` (N,)),
    both drawn from `generator` unless given (`noise`: eps, x0's shape).

    L_simple is the MSE of the prediction, per sample weighted by `loss_weighting` (`uniform`
    or `min_snr`, see `min_snr_weights`). A learned variance (`variance_type` learned_range)
    adds improved DDPM's hybrid term: L = L_simple + vlb_weight * T * L_t, the one-sample
    estimate of lambda * L_vlb, with L_t in bits/dim (`vlb_terms`) through the variance only:
    the mean uses the prediction with its gradient stopped. Only Tensor-friendly ops touch
    the model output, so a Tensor output gives a Tensor loss.
    """
    prediction_type = PredictionType.parse(prediction_type)
    variance_type = VarianceType.parse(variance_type)
    loss_weighting = LossWeighting.parse(loss_weighting)
    x0 = array_of(x0)
    if timesteps is None:
        t = generator.integers(0, schedule.num_train_timesteps, size=x0.shape[0], dtype=np.int64)
    else:
        t = check_timesteps(schedule, timesteps, x0)
    if noise is None:
        noise = generator.standard_normal(x0.shape, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"training_losses: noise has shape {noise.shape}, expected x0's "
                         f"{x0.shape}")
    noise = to_device(noise, device_of(x0))
    x_t = q_sample(schedule, x0, t, noise)
    target = prediction_target(schedule, x0, noise, t, prediction_type)
    prediction, variance_values = split_model_output(model(x_t, t, **cond), x0, variance_type)
    error = prediction - target
    squared_error = error * error
    # Every sample has the same size, so the mean of w * se is the weighted per-sample mean.
    if loss_weighting is LossWeighting.MIN_SNR:
        snr_weights = min_snr_weights(schedule.snr, snr_gamma, prediction_type)[t]
        squared_error = squared_error * per_sample(snr_weights, x0)
    # each sample's loss as the timestep sampler records it: before its own weights 1/(T p_t)
    sample_losses = _mean_over_dims(array_of(squared_error).astype(np.float64))
    if timestep_weights is not None:
        squared_error = squared_error * per_sample(
            np.asarray(timestep_weights, dtype=np.float64), x0)
    loss = squared_error.mean()
    if variance_values is None:
        return LossTerms(loss, t, sample_losses)

    if not vlb_weight >= 0:
        raise ValueError(f"vlb_weight must be >= 0, got {vlb_weight}")
    x0_64, x_t_64 = x0.astype(np.float64), x_t.astype(np.float64)
    frozen = array_of(prediction).astype(np.float64)  # stop-gradient on the mean
    pred_x0, _ = predict_x0_and_eps(schedule, x_t_64, t, frozen, prediction_type)
    if isinstance(variance_values, Tensor):
        variance_values = variance_values.double()
    log_variance = p_log_variance(schedule, variance_type, t, x0_64, variance_values)
    vlb = vlb_terms(schedule, x0_64, x_t_64, t, pred_x0, log_variance)
    scale = vlb_weight * schedule.num_train_timesteps
    vlb_weights = np.ones(len(t)) if timestep_weights is None else timestep_weights
    vlb_loss = (vlb * (scale * np.asarray(vlb_weights, dtype=np.float64))).mean()
    if isinstance(vlb_loss, Tensor) and isinstance(loss, Tensor):
        vlb_loss = autograd.cast(vlb_loss, loss.dtype)  # computed in float64, added in the loss's
    vlb_values = array_of(vlb).astype(np.float64)
    return LossTerms(loss + vlb_loss, t, sample_losses + scale * vlb_values, vlb_values)


def training_loss(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    x0: np.ndarray,
    generator: np.random.Generator,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
    loss_weighting: LossWeighting | str = LossWeighting.UNIFORM,
    snr_gamma: float = 5.0,
    **cond: Any,
) -> Any:
    """The scalar loss of `training_losses` (fixed variance, t ~ U{0..T-1}); a 0-d array or
    float for array models, a Tensor for Tensor models."""
    return training_losses(model, schedule, x0, generator, prediction_type, loss_weighting,
                           snr_gamma, **cond).loss


# ----------------------------------------------------------------------------- likelihood


def _tensor_math(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run `function` on autograd Tensors (so it is differentiable when an input is one) and
    give back an array when no input was a Tensor. Array inputs are taken as float64, on the
    device of the first input that is not on the host."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        any_tensor = any(isinstance(a, Tensor) for a in args)
        devices = [device_of(array_of(a)) for a in args if hasattr(a, "shape")]
        target = next((d for d in devices if d != CPU), CPU)
        args = tuple(a if isinstance(a, Tensor) else Tensor(array_of(a, np.float64),
                                                            device=target) for a in args)
        result = function(*args, **kwargs)
        return result if any_tensor else result.data

    return wrapper


@_tensor_math
def normal_kl(mean1: Any, log_var1: Any, mean2: Any, log_var2: Any) -> Any:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))) elementwise, in nats."""
    return 0.5 * (-1.0 + log_var2 - log_var1 + autograd.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * autograd.exp(-log_var2))


_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


@_tensor_math
def standard_normal_cdf(z: Any) -> Any:
    """Phi(z) = erfc(-z / sqrt 2) / 2, accurate in the lower tail."""
    return 0.5 * autograd.erfc(-z * _INV_SQRT_2)


@_tensor_math
def standard_normal_sf(z: Any) -> Any:
    """1 - Phi(z) = erfc(z / sqrt 2) / 2, accurate in the upper tail."""
    return 0.5 * autograd.erfc(z * _INV_SQRT_2)


@_tensor_math
def discretized_gaussian_log_likelihood(x: Any, means: Any, log_scales: Any, *,
                                        num_bins: int = 256) -> Any:
    """log P(bin of x) under N(means, exp(log_scales)^2), for data in [-1, 1] with `num_bins` bins.

    Bins have width 2 / (num_bins - 1) centred on the data values; the outermost edges go to
    +-inf. Probabilities are differences of CDFs taken in the tail where they are accurate.
    Differentiable in means and log_scales when they are Tensors."""
    half_width = 1.0 / (num_bins - 1)
    inv_scale = autograd.exp(-log_scales)
    lower = (x - half_width - means) * inv_scale
    upper = (x + half_width - means) * inv_scale
    data = x.data
    probability = autograd.where(
        data <= -1.0 + 1e-6,  # the bottom bin reaches -inf
        standard_normal_cdf(upper),
        autograd.where(
            data >= 1.0 - 1e-6,  # the top bin reaches +inf
            standard_normal_sf(lower),
            autograd.where(lower.data > 0.0,
                           standard_normal_sf(lower) - standard_normal_sf(upper),
                           standard_normal_cdf(upper) - standard_normal_cdf(lower)),
        ),
    )
    return autograd.log(autograd.clamp(probability, min=float(np.finfo(np.float64).tiny)))


def learned_range_log_variance(variance_values: Any, min_log: Any, max_log: Any) -> Any:
    """log Sigma = frac log beta + (1 - frac) log beta_tilde, frac = (v + 1) / 2.

    Improved DDPM's eq. 15 with the network's raw output v in [-1, 1] mapped to the
    interpolation weight in [0, 1], as improved-diffusion and diffusers' `learned_range`.
    `min_log` is log beta_tilde (clipped at t = 0), `max_log` log beta; arrays or Tensors."""
    frac = (variance_values + 1.0) * 0.5
    return frac * max_log + (1.0 - frac) * min_log


def model_log_variance(schedule: NoiseSchedule,
                       variance_type: VarianceType | str) -> np.ndarray:
    """(T,) log-variance of p(x_{t-1} | x_t) for a fixed variance type, as improved-diffusion.

    fixed_small: log(beta tilde), element 0 replaced by element 1; fixed_large: log(beta),
    element 0 replaced by beta tilde[1] (only the decoder term uses element 0)."""
    if variance_type == VarianceType.FIXED_SMALL:
        return schedule.posterior_log_variance_clipped
    if variance_type == VarianceType.FIXED_LARGE:
        return np.log(np.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]]))
    if variance_type == VarianceType.LEARNED_RANGE:
        raise ValueError(f"variance_type '{variance_type}' is learned: use p_log_variance with "
                         "the model's variance values")
    raise VarianceType.unknown(variance_type)


def p_log_variance(schedule: NoiseSchedule, variance_type: VarianceType | str, t: np.ndarray,
                   like: np.ndarray, variance_values: Any = None) -> Any:
    """log-variance of p(x_{t-1} | x_t) at timesteps t (N,) for a batch like (N, C, ...).

    Fixed types: `model_log_variance` gathered, (N, 1, ..., 1) float64. learned_range: from
    `variance_values` (N, C, ...), an array or a Tensor (then so is the result), between the
    clipped log beta tilde and log beta."""
    t = check_timesteps(schedule, t, like)
    like = array_of(like)  # float64 (N, 1, ..., 1) on like's device: what gather casts to
    per_image = get_array_module(like).zeros((len(t),) + (1,) * (like.ndim - 1))
    if not learns_variance(variance_type):
        return gather(model_log_variance(schedule, variance_type), t, per_image)
    if variance_values is None:
        raise ValueError(f"variance_type '{variance_type}' needs the model's variance values")
    return learned_range_log_variance(
        variance_values,
        gather(schedule.posterior_log_variance_clipped, t, per_image),
        gather(np.log(schedule.betas), t, per_image),
    )


@dataclass
class VariationalBound:
    """Per-image terms of the variational bound, all in bits/dim.

    total: (N,) = prior + terms.sum(1); prior: (N,) L_T; terms: (N, T), terms[:, 0] is the
    decoder NLL L_0 and terms[:, t] the KL term L_t.
    """

    total: np.ndarray
    prior: np.ndarray
    terms: np.ndarray


def _mean_over_dims(values: Any) -> Any:
    """(N, ...) -> (N,) means; an array or a Tensor."""
    if isinstance(values, Tensor):
        return values.reshape(values.shape[0], -1).mean(dim=1)
    return values.reshape(values.shape[0], -1).mean(axis=1)


def prior_bpd(schedule: NoiseSchedule, x0: np.ndarray) -> np.ndarray:
    """(N,) KL(q(x_T | x_0) || N(0, I)) in bits/dim."""
    x0 = array_of(x0, np.float64)
    xp = get_array_module(x0)
    t = np.full(x0.shape[0], schedule.num_train_timesteps - 1)
    mean, variance = q_mean_variance(schedule, x0, t)
    kl = normal_kl(mean, xp.log(variance), 0.0, 0.0)
    return _mean_over_dims(xp.broadcast_to(kl, x0.shape)) / math.log(2.0)


def vlb_terms(schedule: NoiseSchedule, x0: np.ndarray, x_t: np.ndarray, t: np.ndarray,
              pred_x0: np.ndarray, log_variance: Any) -> Any:
    """(N,) bound terms L_{t} in bits/dim for p(x_{t-1} | x_t) = N(posterior mean of pred_x0,
    exp(log_variance)): the decoder NLL -log p(x0 | x_1) where t = 0, else
    KL(q(x_{t-1} | x_t, x0) || p). Float64 arrays (N, ...); `log_variance` broadcasts against
    them and may be a Tensor, and then so is the result (differentiable in it)."""
    model_mean, _, _ = q_posterior(schedule, pred_x0, x_t, t)
    nll = kl = None  # each computed only if some sample needs it (the bound's loop: one t)
    if np.any(t == 0):
        nll = -_mean_over_dims(discretized_gaussian_log_likelihood(x0, model_mean,
                                                                   0.5 * log_variance))
    if np.any(t > 0):
        true_mean, _, true_log_variance = q_posterior(schedule, x0, x_t, t)
        kl = _mean_over_dims(normal_kl(true_mean, true_log_variance, model_mean, log_variance))
    if kl is None or nll is None:
        return (nll if kl is None else kl) / math.log(2.0)
    if isinstance(kl, Tensor):
        return autograd.where(t == 0, nll, kl) / math.log(2.0)
    xp = get_array_module(kl)
    return xp.where(to_device(t == 0, device_of(kl)), nll, kl) / math.log(2.0)


def variational_bound(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    x0: np.ndarray,
    generator: np.random.Generator,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
    variance_type: VarianceType | str = VarianceType.FIXED_SMALL,
    clip_denoised: bool = True,
    **cond: Any,
) -> VariationalBound:
    """The full T-step variational bound (NLL upper bound) per image, in bits/dim.

    x0: (N, ...) 8-bit data scaled to [-1, 1]. One batched model call per timestep, with fresh
    noise from `generator`. The model mean uses the predicted x0 (clipped to [-1, 1] if
    `clip_denoised`) in the posterior formula; the variance follows `p_log_variance`
    (learned_range: from the model's variance channels).
    """
    x0 = array_of(x0)
    xp, device = get_array_module(x0), device_of(x0)
    batch = x0.shape[0]
    terms = xp.zeros((batch, schedule.num_train_timesteps))
    x0_64 = x0.astype(np.float64)
    for step in range(schedule.num_train_timesteps):
        t = np.full(batch, step, dtype=np.int64)
        noise = to_device(generator.standard_normal(x0.shape, dtype=x0.dtype), device)
        x_t = q_sample(schedule, x0, t, noise)
        output = to_device(array_of(model(x_t, t, **cond)), device).astype(np.float64)
        prediction, variance_values = split_model_output(output, x0, variance_type)
        x_t = x_t.astype(np.float64)
        pred_x0, _ = predict_x0_and_eps(schedule, x_t, t, prediction, prediction_type)
        if clip_denoised:
            pred_x0 = xp.clip(pred_x0, -1.0, 1.0)
        log_variance = p_log_variance(schedule, variance_type, t, x0_64, variance_values)
        terms[:, step] = vlb_terms(schedule, x0_64, x_t, t, pred_x0, log_variance)
    prior = prior_bpd(schedule, x0_64)
    terms, prior = to_device(terms, CPU), to_device(prior, CPU)  # the bound's results: host
    return VariationalBound(total=prior + terms.sum(axis=1), prior=prior, terms=terms)
