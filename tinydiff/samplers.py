"""DDPM and DDIM samplers, classifier-free guidance and DDIM inversion.

The sampler objects follow diffusers' schedulers: `timesteps` holds the descending training
timesteps visited, and `step(model_output, t, x_t, generator)` moves x_t to the next (lower)
timestep. Unlike diffusers, the previous timestep is always the next element of `timesteps`
(then "clean", with alpha_bar = 1), so uneven spacings are exact. `sample()` runs a whole loop.

A model is called as `model(x_t, t, **cond)` with x_t of shape (N, ...) and t a host int64
array of shape (N,); its output may be an array or a Tensor. The loops build no graphs
themselves; wrap them in the engine's no_grad. Every random draw uses the
`numpy.random.Generator` that is passed in (on the host, so a seed gives the same samples on
every device); the batch dtype (float32 by default) is kept.

Devices: `step` and `model_prediction` compute on the device of x_t (NumPy or CuPy arrays).
`sample` runs its loop on `device` (default: that of the model's parameters) and returns
NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autograd.backend import CPU, Device, device_of, get_array_module, to_device
from tinydiff.diffusion import (
    array_of,
    check_prediction_type,
    learned_range_log_variance,
    learns_variance,
    predict_x0_and_eps,
    shape_of,
    split_model_output,
)
from tinydiff.schedules import NoiseSchedule

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
SAMPLERS = ("ddpm", "ddim")
DEFAULT_DDIM_STEPS = 50
# The classifier-free guidance scale the command line and examples use for class-conditional
# models (w = 1: the conditional model alone). Chosen by the runs in the README.
DEFAULT_GUIDANCE = 2.0


def inference_timesteps(
    num_train_timesteps: int, num_inference_steps: int, timestep_spacing: str = "leading"
) -> np.ndarray:
    """Descending int64 timesteps (n,) as diffusers' `set_timesteps` spaces them (steps_offset 0).

    leading: arange(n) * (T // n); trailing: round(T - arange(n) * T / n) - 1;
    linspace: round(linspace(0, T - 1, n)).
    """
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(
            f"unknown timestep_spacing {timestep_spacing!r}; expected one of {TIMESTEP_SPACINGS}"
        )
    n = num_inference_steps
    if (
        isinstance(n, bool)
        or not isinstance(n, int | np.integer)
        or not 1 <= n <= num_train_timesteps
    ):
        raise ValueError(
            f"num_inference_steps must be an int in [1, {num_train_timesteps}], got {n!r}"
        )
    steps = np.arange(n)
    if timestep_spacing == "leading":
        ascending = steps * (num_train_timesteps // n)
    elif timestep_spacing == "trailing":
        ascending = (np.round(num_train_timesteps - steps * (num_train_timesteps / n)) - 1)[::-1]
    else:
        ascending = np.round(np.linspace(0, num_train_timesteps - 1, n))
    return ascending[::-1].astype(np.int64)


@dataclass
class SamplerStep:
    """Result of one sampler step: x at the previous timestep and the predicted x0, (N, ...)."""

    prev_sample: np.ndarray
    pred_original_sample: np.ndarray


@dataclass
class Trajectory:
    """Recorded steps: timesteps (K,), samples and pred_original_samples (K, N, ...).

    samples[k] is x after the step taken at timesteps[k] (x_{prev}); the last one is x0.
    """

    timesteps: np.ndarray
    samples: np.ndarray
    pred_original_samples: np.ndarray


def _cast(value: float, like: np.ndarray) -> np.generic:
    """A float64 scalar coefficient as a NumPy scalar of `like`'s dtype (no silent promotion;
    a scalar joins an array on any device)."""
    return like.dtype.type(value)


def _posterior_variance(alpha_bar: float, alpha_bar_prev: float) -> float:
    """Variance of q(x_prev | x_t, x0) between two (possibly non-adjacent) timesteps."""
    return (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)


def _draw_noise(generator: np.random.Generator | None, like: np.ndarray) -> np.ndarray:
    """N(0, I) of `like`'s shape and dtype, drawn on the host, on `like`'s device."""
    if generator is None:
        raise ValueError("noise is drawn here: pass a numpy.random.Generator (or a seed)")
    return to_device(generator.standard_normal(like.shape, dtype=like.dtype), device_of(like))


def model_device(model: Any) -> Device:
    """The device of a model's parameters (the CPU for a model without any)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return CPU if first is None else first.device


class _Sampler:
    """Shared timestep bookkeeping and x0 / eps prediction for the DDPM and DDIM samplers."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int | None,
        timestep_spacing: str,
        prediction_type: str,
        clip_sample: bool,
        clip_sample_range: float,
    ) -> None:
        check_prediction_type(prediction_type)
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = float(clip_sample_range)
        steps = schedule.num_train_timesteps if num_inference_steps is None else num_inference_steps
        self.timesteps = inference_timesteps(schedule.num_train_timesteps, steps, timestep_spacing)
        self.prev_timesteps = np.append(self.timesteps[1:], -1)
        self._prev_of = {int(t): int(p) for t, p in zip(self.timesteps, self.prev_timesteps)}
        if prediction_type == "epsilon" and np.any(schedule.alphas_cumprod[self.timesteps] == 0):
            raise ValueError(
                "epsilon prediction cannot recover x0 where alpha_bar is 0 (a zero-terminal-SNR "
                "schedule's last timestep): x0 = (x_t - eps) / 0. Use prediction_type="
                "'v_prediction' (or 'sample') with rescale_betas_zero_snr=True"
            )

    def previous_timestep(self, t: int) -> int:
        """The timestep after t in `timesteps`, or -1 (clean data) after the last one."""
        if int(t) not in self._prev_of:
            raise ValueError(f"timestep {t} is not in this sampler's timesteps")
        return self._prev_of[int(t)]

    def alpha_bars(self, t: int) -> tuple[float, float]:
        """(alpha_bar_t, alpha_bar_prev) as float64 scalars; alpha_bar at timestep -1 is 1."""
        prev = self.previous_timestep(t)
        alphas_cumprod = self.schedule.alphas_cumprod
        return float(alphas_cumprod[t]), float(alphas_cumprod[prev]) if prev >= 0 else 1.0

    def predict_original(
        self, model_output: np.ndarray, t: int, x_t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x0, eps) from a model output; with clipping, eps is re-derived from the clipped x0."""
        t_batch = np.full(x_t.shape[0], t, dtype=np.int64)
        x0, eps = predict_x0_and_eps(
            self.schedule, x_t, t_batch, model_output, self.prediction_type
        )
        if self.clip_sample:
            x0 = get_array_module(x0).clip(x0, -self.clip_sample_range, self.clip_sample_range)
            _, eps = predict_x0_and_eps(self.schedule, x_t, t_batch, x0, "sample")
        return x0, eps

    def step(
        self,
        model_output: np.ndarray,
        t: int,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        raise NotImplementedError


class DDPMSampler(_Sampler):
    """Ancestral sampling from p(x_prev | x_t) = q(x_prev | x_t, x0 = predicted x0).

    variance_type: `fixed_small` (posterior variance, beta tilde), `fixed_large` (beta), or
    `learned_range` (the model output (N, 2C, ...) ends with v, see
    `diffusion.learned_range_log_variance`), as in diffusers' DDPMScheduler; between
    non-adjacent timesteps beta = 1 - abar_t / abar_prev and beta tilde is the posterior
    variance between them (improved DDPM's respacing). No noise is added on the last step.
    With fewer steps than T this is "respaced" DDPM.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int | None = None,
        timestep_spacing: str = "leading",
        variance_type: str = "fixed_small",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ) -> None:
        learns_variance(variance_type)  # validates the name
        super().__init__(
            schedule,
            num_inference_steps,
            timestep_spacing,
            prediction_type,
            clip_sample,
            clip_sample_range,
        )
        self.variance_type = variance_type

    def step(
        self,
        model_output: np.ndarray,
        t: int,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        prediction, variance_values = split_model_output(model_output, x_t, self.variance_type)
        x0, _ = self.predict_original(prediction, t, x_t)
        alpha_bar, alpha_bar_prev = self.alpha_bars(t)
        beta = 1.0 - alpha_bar / alpha_bar_prev
        x0_coef = math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)
        x_t_coef = math.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        prev_sample = _cast(x0_coef, x_t) * x0 + _cast(x_t_coef, x_t) * x_t
        variance = self.variance(alpha_bar, alpha_bar_prev, variance_values)
        if isinstance(variance, float):
            variance, std = _cast(variance, x_t), _cast(math.sqrt(variance), x_t)
        else:
            variance, std = variance.astype(x_t.dtype), get_array_module(variance).sqrt(
                variance).astype(x_t.dtype)
        if classifier_gradient is not None:  # Dhariwal & Nichol: mean + Sigma s grad log p(y|x_t)
            prev_sample = prev_sample + variance * classifier_gradient.astype(x_t.dtype)
        if self.previous_timestep(t) >= 0:
            prev_sample = prev_sample + std * _draw_noise(generator, x_t)
        return SamplerStep(prev_sample, x0)

    def variance(self, alpha_bar: float, alpha_bar_prev: float,
                 variance_values: np.ndarray | None = None) -> float | np.ndarray:
        """Sigma of p(x_prev | x_t) between two timesteps, float64: a float, or an (N, C, ...)
        array from a learned variance's values (on their device). For its log the posterior
        variance is clamped at 1e-20, as diffusers does (it is 0 on the last step, where no
        noise is added)."""
        beta = 1.0 - alpha_bar / alpha_bar_prev
        posterior_variance = _posterior_variance(alpha_bar, alpha_bar_prev)
        if self.variance_type == "fixed_small":
            return float(posterior_variance)
        if self.variance_type == "fixed_large":
            return float(beta)
        values = array_of(variance_values).astype(np.float64)
        log_variance = learned_range_log_variance(
            values, math.log(max(posterior_variance, 1e-20)), math.log(beta))
        return get_array_module(values).exp(log_variance)


class DDIMSampler(_Sampler):
    """DDIM (Song et al. 2021): x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z.

    s^2 = eta^2 * posterior variance; eta = 0 is deterministic, eta = 1 equals DDPM fixed_small.
    As in improved-diffusion, eps is re-derived from the clipped x0 when `clip_sample` is set.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int = DEFAULT_DDIM_STEPS,
        timestep_spacing: str = "leading",
        eta: float = 0.0,
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ) -> None:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        super().__init__(
            schedule,
            num_inference_steps,
            timestep_spacing,
            prediction_type,
            clip_sample,
            clip_sample_range,
        )
        self.eta = float(eta)

    def step(
        self,
        model_output: np.ndarray,
        t: int,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        x0, eps = self.predict_original(model_output, t, x_t)
        alpha_bar, alpha_bar_prev = self.alpha_bars(t)
        if classifier_gradient is not None:  # Dhariwal & Nichol: eps - sqrt(1 - abar) s grad
            eps = eps - _cast(math.sqrt(1.0 - alpha_bar), x_t) * classifier_gradient.astype(
                x_t.dtype)
            x0 = (x_t - _cast(math.sqrt(1.0 - alpha_bar), x_t) * eps) / _cast(
                math.sqrt(alpha_bar), x_t)
        variance = self.eta**2 * _posterior_variance(alpha_bar, alpha_bar_prev)
        direction_coef = math.sqrt(max(1.0 - alpha_bar_prev - variance, 0.0))
        prev_sample = _cast(math.sqrt(alpha_bar_prev), x_t) * x0 + _cast(direction_coef, x_t) * eps
        if self.eta > 0 and self.previous_timestep(t) >= 0:
            noise = _draw_noise(generator, x_t)
            prev_sample = prev_sample + _cast(math.sqrt(variance), x_t) * noise
        return SamplerStep(prev_sample, x0)


# ----------------------------------------------------------------------------- model calls


def _batched_cond(values: Mapping[str, Any], batch: int) -> dict[str, np.ndarray]:
    """Conditioning kwargs as arrays with leading dimension N (scalars are broadcast)."""
    arrays = {}
    for name, value in values.items():
        array = value if hasattr(value, "ndim") else np.asarray(value)
        if array.ndim == 0:
            array = get_array_module(array).full(batch, array)
        if array.shape[0] != batch:
            raise ValueError(f"cond {name!r} has leading dimension {array.shape[0]}, need {batch}")
        arrays[name] = array
    return arrays


def model_prediction(
    model: Callable[..., Any],
    x_t: np.ndarray,
    t: int,
    cond: Mapping[str, Any],
    guidance_scale: float | None = None,
    null_cond: Mapping[str, Any] | None = None,
    variance_type: str = "fixed_small",
) -> np.ndarray:
    """The model output at (x_t, t) as an ndarray of x_t's dtype, optionally with CFG.

    With `guidance_scale` s, the conditional (`cond`) and unconditional (`null_cond`, same keys,
    e.g. {"class_labels": null_label}) halves go through ONE model call on a 2N batch and
    out = out_uncond + s * (out_cond - out_uncond), applied to the raw output as diffusers does.
    Every prediction type is affine in the output with weights summing to one, so this equals
    guiding eps. s = 1 gives the conditional output; s = 0 the unconditional one. A learned
    variance's channels (`variance_type` learned_range: output (N, 2C, ...)) are not guided:
    they come from the conditional half, as in GLIDE.
    """
    batch = x_t.shape[0]
    xp, device = get_array_module(x_t), device_of(x_t)
    if guidance_scale is None:
        output = to_device(array_of(model(x_t, np.full(batch, t, dtype=np.int64), **cond)),
                           device)
    else:
        if null_cond is None or set(null_cond) != set(cond) or not cond:
            raise ValueError(
                "guidance needs cond kwargs and null_cond with the same keys, e.g. "
                "class_labels=labels, null_cond={'class_labels': null_label}"
            )
        conditional, unconditional = _batched_cond(cond, batch), _batched_cond(null_cond, batch)
        both = {k: _concatenate(conditional[k], unconditional[k]) for k in conditional}
        t_both = np.full(2 * batch, t, dtype=np.int64)
        output = to_device(array_of(model(xp.concatenate([x_t, x_t]), t_both, **both)), device)
        if output.shape[:1] != (2 * batch,):
            raise ValueError(f"model output has shape {output.shape}, expected leading {2 * batch}")
        out_cond, out_uncond = output[:batch], output[batch:]
        guided = out_uncond + _cast(float(guidance_scale), out_cond) * (out_cond - out_uncond)
        if learns_variance(variance_type) and out_cond.ndim > 1:
            channels = x_t.shape[1]
            guided[:, channels:] = out_cond[:, channels:]
        output = guided
    split_model_output(output, x_t, variance_type)  # checks the shape
    return output.astype(x_t.dtype, copy=False)


def _concatenate(a, b):
    """Two conditioning arrays end to end, on the device of the first (labels: the host)."""
    return get_array_module(a).concatenate([a, to_device(b, device_of(a))])


# ----------------------------------------------------------------------------- user API


def class_guidance(model: Any, labels: np.ndarray | None,
                   guidance_scale: float | None = DEFAULT_GUIDANCE) -> dict[str, Any]:
    """`sample` keyword arguments that ask a class-conditional tinydiff UNet for `labels`
    (N,), guided with `guidance_scale` against its null label; {} for an unconditional
    model. Scales 0 and 1 (and None) need only one model call per step."""
    num_classes = model.config.num_classes
    if num_classes is None or labels is None:
        return {}
    labels = np.asarray(labels, dtype=np.int64)
    if guidance_scale == 0:  # the unconditional prediction alone: one model call, not two
        return {"class_labels": np.full_like(labels, num_classes)}
    if guidance_scale is None or guidance_scale == 1:  # the conditional prediction alone
        return {"class_labels": labels}
    return {"class_labels": labels, "guidance_scale": guidance_scale,
            "null_cond": {"class_labels": num_classes}}



def make_sampler(
    sampler: str,
    schedule: NoiseSchedule,
    num_inference_steps: int | None = None,
    **options: Any,
) -> DDPMSampler | DDIMSampler:
    """A `DDPMSampler` (default T steps) or `DDIMSampler` (default 50 steps, at most T)."""
    if sampler == "ddpm":
        return DDPMSampler(schedule, num_inference_steps, **options)
    if sampler == "ddim":
        if num_inference_steps is None:
            num_inference_steps = min(DEFAULT_DDIM_STEPS, schedule.num_train_timesteps)
        return DDIMSampler(schedule, num_inference_steps, **options)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


def sample(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    shape: Sequence[int],
    sampler: str = "ddim",
    num_inference_steps: int | None = None,
    generator: np.random.Generator | None = None,
    seed: int | None = None,
    x_T: np.ndarray | None = None,
    eta: float = 0.0,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    timestep_spacing: str = "leading",
    clip_sample: bool = True,
    clip_sample_range: float = 1.0,
    guidance_scale: float | None = None,
    null_cond: Mapping[str, Any] | None = None,
    classifier_grad_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    classifier_scale: float = 1.0,
    return_trajectory: bool = False,
    trajectory_steps: Sequence[int] | None = None,
    dtype: Any = np.float32,
    device: str | Device | None = None,
    **cond: Any,
) -> np.ndarray | tuple[np.ndarray, Trajectory]:
    """Generate samples of `shape` (N, ...) with `sampler` "ddim" (uses eta) or "ddpm" (uses
    variance_type). x_T defaults to N(0, I) drawn from `generator` (or default_rng(seed)).

    `variance_type` also says what the model outputs: with `learned_range` its variance
    channels are used by DDPM and dropped by DDIM. Classifier guidance (Dhariwal & Nichol):
    `classifier_grad_fn(x_t, t)` returns grad_x log p(y | x_t, t) (N, ...) for the wanted
    labels; DDPM shifts its mean by classifier_scale * Sigma * grad, DDIM its eps by
    -sqrt(1 - abar_t) * classifier_scale * grad. Scale 0 never calls it.

    `trajectory_steps` are loop indices 0..n-1 to record (default: all) when `return_trajectory`;
    then returns (x0, Trajectory). See `model_prediction` for guidance_scale / null_cond.
    The loop runs on `device` (default: `model_device(model)`); results are NumPy arrays.
    """
    options: dict[str, Any] = {
        "timestep_spacing": timestep_spacing,
        "prediction_type": prediction_type,
        "clip_sample": clip_sample,
        "clip_sample_range": clip_sample_range,
    }
    if sampler == "ddim":
        options["eta"] = eta
    elif sampler == "ddpm":
        options["variance_type"] = variance_type
    runner = make_sampler(sampler, schedule, num_inference_steps, **options)
    guided_by_classifier = classifier_grad_fn is not None and classifier_scale != 0
    if generator is None and seed is not None:
        generator = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    device = model_device(model) if device is None else Device(device)
    if x_T is None:
        x = to_device(_draw_noise(generator, np.empty(shape, dtype=dtype)), device)
    else:
        if shape_of(x_T) != shape:
            raise ValueError(f"x_T has shape {shape_of(x_T)}, expected {shape}")
        x = to_device(array_of(x_T, dtype), device).copy()

    num_steps = len(runner.timesteps)
    recorded = set(range(num_steps) if trajectory_steps is None else trajectory_steps)
    if not recorded <= set(range(num_steps)):
        raise ValueError(f"trajectory_steps must be loop indices in [0, {num_steps})")
    times, samples, originals = [], [], []
    for index, t in enumerate(runner.timesteps):
        output = model_prediction(model, x, int(t), cond, guidance_scale, null_cond,
                                  variance_type)
        if sampler == "ddim" and learns_variance(variance_type):
            output = output[:, : x.shape[1]]
        gradient = None
        if guided_by_classifier:
            t_batch = np.full(x.shape[0], int(t), dtype=np.int64)
            gradient = _classifier_gradient(classifier_grad_fn, x, t_batch, classifier_scale)
        result = runner.step(output, int(t), x, generator, gradient)
        x = result.prev_sample
        if return_trajectory and index in recorded:
            times.append(int(t))
            samples.append(x)
            originals.append(result.pred_original_sample)
    x = to_device(x, CPU)
    if not return_trajectory:
        return x
    xp = get_array_module(*samples)
    trajectory = Trajectory(
        timesteps=np.asarray(times, dtype=np.int64),
        samples=to_device(xp.stack(samples), CPU) if samples else np.empty((0,) + shape,
                                                                             dtype=dtype),
        pred_original_samples=(to_device(xp.stack(originals), CPU) if originals
                               else np.empty((0,) + shape, dtype=dtype)),
    )
    return x, trajectory


def _classifier_gradient(classifier_grad_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                         x: np.ndarray, t: np.ndarray, scale: float) -> np.ndarray:
    """scale * grad_x log p(y | x_t, t), checked to have x's shape and to be finite."""
    gradient = to_device(array_of(classifier_grad_fn(x, t)), device_of(x))
    if gradient.shape != x.shape:
        raise ValueError(f"classifier_grad_fn returned shape {gradient.shape}, expected {x.shape}")
    if not bool(get_array_module(gradient).isfinite(gradient).all()):
        raise ValueError(f"classifier_grad_fn returned a non-finite gradient at t={t[0]}")
    return _cast(float(scale), x) * gradient.astype(x.dtype, copy=False)


def ddim_invert(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    x0: np.ndarray,
    num_inference_steps: int = DEFAULT_DDIM_STEPS,
    timestep_spacing: str = "leading",
    prediction_type: str = "epsilon",
    num_fixed_point_iterations: int = 0,
    guidance_scale: float | None = None,
    null_cond: Mapping[str, Any] | None = None,
    device: str | Device | None = None,
    **cond: Any,
) -> np.ndarray:
    """Run deterministic DDIM (eta = 0, no clipping) backwards: x0 (N, ...) -> x_T (N, ...),
    on `device` (default: the model's); returns a NumPy array.

    Each step solves the DDIM update x_prev = f(x_t) for x_t. With 0 fixed-point iterations the
    model is evaluated at (x_prev, t), the usual approximation; each extra iteration re-evaluates
    it at the current x_t estimate, converging to the exact inverse of `sample(..., "ddim")`.
    """
    if num_fixed_point_iterations < 0:
        raise ValueError("num_fixed_point_iterations must be >= 0")
    runner = DDIMSampler(
        schedule,
        num_inference_steps,
        timestep_spacing,
        eta=0.0,
        prediction_type=prediction_type,
        clip_sample=False,
    )
    device = model_device(model) if device is None else Device(device)
    x = to_device(array_of(x0), device).copy()
    for t in runner.timesteps[::-1]:
        alpha_bar, alpha_bar_prev = runner.alpha_bars(int(t))
        x_prev, estimate = x, x
        for _ in range(num_fixed_point_iterations + 1):
            output = model_prediction(model, estimate, int(t), cond, guidance_scale, null_cond)
            _, eps = runner.predict_original(output, int(t), estimate)
            # x0 implied by (x_prev, eps), then pushed forward to x_t with the same eps.
            x0_hat = (x_prev - _cast(math.sqrt(1.0 - alpha_bar_prev), x) * eps) / _cast(
                math.sqrt(alpha_bar_prev), x
            )
            estimate = (
                _cast(math.sqrt(alpha_bar), x) * x0_hat + _cast(math.sqrt(1.0 - alpha_bar), x) * eps
            )
        x = estimate
    return to_device(x, CPU)
