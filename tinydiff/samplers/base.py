"""What every sampler shares: timestep spacings, sigmas, x0 / eps conversion, thresholding.

A sampler is an object built once for a schedule, a number of steps and its own options (the
keyword arguments of its `__init__`, with diffusers' names and defaults for its scheduler
class). The options every sampler takes (prediction_type, variance_type, timestep_spacing:
`tinydiff.options`) are parsed once, in `Sampler.__init__`, and kept as enum members.
`timesteps` holds the timesteps at which the model is called, in order (Heun visits each
inner one twice, as diffusers' HeunDiscreteScheduler does), so `model_calls` is
`len(timesteps)`. `step(model_output, t, x_t, generator, classifier_gradient)` is called once
per model call and returns a `SamplerStep`.

Every sampler takes and returns variance-preserving samples x_t = alpha_t x0 + sigma_t eps
(alpha_t^2 + sigma_t^2 = 1), the variable of DDPM, DDIM, DPM-Solver and UniPC. The
sigma-space samplers (Euler, Heun) integrate in diffusers' variable x = x_t / alpha_t (noise
level sigma = sigma_t / alpha_t, so x = x_t sqrt(sigma^2 + 1)) inside `step`.

Multistep samplers keep state between steps (earlier model outputs): `reset()` starts a new
run and `sample()` calls it.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from autograd.backend import device_of, get_array_module, to_device
from tinydiff.diffusion import split_model_output, x0_and_eps_from_output
from tinydiff.options import Option, PredictionType, TimestepSpacing, VarianceType
from tinydiff.schedules import NoiseSchedule

DEFAULT_STEPS = 50
# diffusers' substitute for a zero alphas_cumprod at the last timestep of a zero-terminal-SNR
# schedule (`rescale_betas_zero_snr` in DPMSolverMultistep, UniPC and Euler).
ZERO_SNR_ALPHAS_CUMPROD = 2.0**-24


@dataclass
class SamplerStep:
    """Result of one sampler step: x at the next noise level and the predicted x0, (N, ...)."""

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


# ----------------------------------------------------------------------------- small helpers


def cast(value: float, like: np.ndarray) -> np.generic:
    """A float64 scalar coefficient as a NumPy scalar of `like`'s dtype (no silent promotion;
    a scalar joins an array on any device)."""
    return like.dtype.type(value)


def draw_noise(generator: np.random.Generator | None, like: np.ndarray) -> np.ndarray:
    """N(0, I) of `like`'s shape and dtype, drawn on the host, on `like`'s device."""
    if generator is None:
        raise ValueError("noise is drawn here: pass a numpy.random.Generator (or a seed)")
    return to_device(generator.standard_normal(like.shape, dtype=like.dtype), device_of(like))


def check_steps(num_inference_steps: Any, num_train_timesteps: int) -> int:
    n = num_inference_steps
    if (isinstance(n, bool) or not isinstance(n, int | np.integer)
            or not 1 <= n <= num_train_timesteps):
        raise ValueError(
            f"num_inference_steps must be an int in [1, {num_train_timesteps}] (the schedule's "
            f"training timesteps), got {n!r}"
        )
    return int(n)


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    """A sampler's own string option (solver_type, final_sigmas_type) is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def inference_timesteps(
    num_train_timesteps: int, num_inference_steps: int,
    timestep_spacing: TimestepSpacing | str = TimestepSpacing.LEADING,
) -> np.ndarray:
    """Descending int64 timesteps (n,) as diffusers' DDIM `set_timesteps` spaces them
    (steps_offset 0).

    leading: arange(n) * (T // n); trailing: round(T - arange(n) * T / n) - 1;
    linspace: round(linspace(0, T - 1, n)).
    """
    n = check_steps(num_inference_steps, num_train_timesteps)
    steps = np.arange(n)
    if timestep_spacing == TimestepSpacing.LEADING:
        ascending = steps * (num_train_timesteps // n)
    elif timestep_spacing == TimestepSpacing.TRAILING:
        ascending = (np.round(num_train_timesteps - steps * (num_train_timesteps / n)) - 1)[::-1]
    elif timestep_spacing == TimestepSpacing.LINSPACE:
        ascending = np.round(np.linspace(0, num_train_timesteps - 1, n))
    else:
        raise TimestepSpacing.unknown(timestep_spacing)
    return ascending[::-1].astype(np.int64)


def solver_timesteps(
    num_train_timesteps: int, num_inference_steps: int, timestep_spacing: TimestepSpacing | str
) -> np.ndarray:
    """Descending int64 timesteps (n,) as diffusers' DPMSolverMultistep and UniPC space them:
    n + 1 points, the last (t = 0) dropped, for linspace and leading; trailing as DDIM's."""
    n = check_steps(num_inference_steps, num_train_timesteps)
    T = num_train_timesteps
    if timestep_spacing == TimestepSpacing.LINSPACE:
        timesteps = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
    elif timestep_spacing == TimestepSpacing.LEADING:
        timesteps = (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1]
    elif timestep_spacing == TimestepSpacing.TRAILING:
        timesteps = np.arange(T, 0, -T / n).round() - 1
    else:
        raise TimestepSpacing.unknown(timestep_spacing)
    timesteps = timesteps.astype(np.int64)
    _check_distinct(timesteps, n, timestep_spacing)
    return timesteps


def sigma_timesteps(
    num_train_timesteps: int, num_inference_steps: int, timestep_spacing: TimestepSpacing | str
) -> np.ndarray:
    """Descending timesteps (n,) as diffusers' Euler and Heun schedulers space them: float32
    values (linspace is not rounded), returned as float64."""
    n = check_steps(num_inference_steps, num_train_timesteps)
    T = num_train_timesteps
    if timestep_spacing == TimestepSpacing.LINSPACE:
        timesteps = np.linspace(0, T - 1, n, dtype=np.float32)[::-1]
    elif timestep_spacing == TimestepSpacing.LEADING:
        timesteps = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.float32)
    elif timestep_spacing == TimestepSpacing.TRAILING:
        timesteps = np.arange(T, 0, -T / n).round().astype(np.float32) - 1
    else:
        raise TimestepSpacing.unknown(timestep_spacing)
    return timesteps.astype(np.float64)


def _check_distinct(timesteps: np.ndarray, n: int, spacing: TimestepSpacing | str) -> None:
    if len(timesteps) != n or np.any(np.diff(timesteps) >= 0) or timesteps[-1] < 0:
        raise ValueError(
            f"num_inference_steps={n} with timestep_spacing='{spacing}' repeats timesteps "
            f"({timesteps[:4]}...); use fewer steps or another spacing"
        )


# ----------------------------------------------------------------------------- sigmas


def sampling_alphas_cumprod(schedule: NoiseSchedule) -> np.ndarray:
    """alphas_cumprod, with a zero terminal value replaced by 2^-24 as diffusers' sigma and
    multistep schedulers do (sigma would be infinite)."""
    alphas_cumprod = schedule.alphas_cumprod.copy()
    if alphas_cumprod[-1] == 0:
        alphas_cumprod[-1] = ZERO_SNR_ALPHAS_CUMPROD
    return alphas_cumprod


def sigmas_of(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Noise-to-signal ratios sigma_t = sqrt((1 - alphas_cumprod_t) / alphas_cumprod_t)
    (Karras et al. 2022, the VE noise level of x_t / alpha_t)."""
    return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


def alpha_sigma_of(sigma: float) -> tuple[float, float]:
    """(alpha_t, sigma_t) of the variance-preserving x_t at noise level sigma:
    alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha_t (diffusers'
    _sigma_to_alpha_sigma_t)."""
    alpha = 1.0 / math.sqrt(sigma**2 + 1.0)
    return alpha, sigma * alpha


def log_snr_half(sigma: float) -> float:
    """lambda = log(alpha_t / sigma_t) = -log(sigma) (DPM-Solver's half log-SNR); +inf at 0."""
    return math.inf if sigma == 0 else -math.log(sigma)


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional timesteps of noise levels: linear interpolation of log sigma between the two
    training timesteps around it (diffusers' _sigma_to_t), clamped to [0, T - 1]."""
    log_sigma = np.log(np.maximum(np.asarray(sigmas, dtype=np.float64), 1e-10))
    distances = log_sigma - log_sigmas[:, None]
    low = np.cumsum(distances >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    weight = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    return (1 - weight) * low + weight * high


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, eq. (5): sigma_i = (sigma_max^(1/rho) + i / (n - 1)
    (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..n-1 (descending)."""
    ramp = np.linspace(0, 1, n)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def check_karras(schedule: NoiseSchedule) -> None:
    if schedule.alphas_cumprod[-1] == 0:
        raise ValueError(
            "use_karras_sigmas needs a finite sigma_max, but this schedule has zero terminal "
            "SNR (rescale_betas_zero_snr=True: sigma_max is infinite); allowed: "
            "use_karras_sigmas=False with it, or a schedule without the rescale"
        )


def dynamic_threshold(x0: np.ndarray, ratio: float, max_value: float) -> np.ndarray:
    """Dynamic thresholding (Saharia et al. 2022, Imagen, section 2.3): per sample, s = the
    `ratio` quantile of |x0| clamped to [1, max_value]; x0 -> clip(x0, -s, s) / s."""
    xp = get_array_module(x0)
    flat = x0.reshape(x0.shape[0], -1)
    s = xp.quantile(xp.abs(flat).astype(np.float64), ratio, axis=1)
    s = xp.clip(s, 1.0, max_value)[:, None].astype(x0.dtype)
    return (xp.clip(flat, -s, s) / s).reshape(x0.shape)


# ----------------------------------------------------------------------------- the base class


class Sampler:
    """Base of every sampler: steps, model output layout, and the options all samplers take,
    parsed here once: `prediction_type`, `variance_type` (None: fixed_small, the model output
    has no variance channels) and `timestep_spacing`, kept as `tinydiff.options` members.

    Subclasses set `name` and `stochastic` (whether `step` draws noise), fill `timesteps`
    and implement `step`. Their `__init__` keyword arguments after (schedule,
    num_inference_steps) are the options `make_sampler` accepts.
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction_type: PredictionType | str,
        variance_type: VarianceType | str | None,
        timestep_spacing: TimestepSpacing | str,
    ) -> None:
        self.schedule = schedule
        self.prediction_type = PredictionType.parse(prediction_type)
        # What the model outputs: with learned_range (N, 2C, ...), the prediction then the
        # variance values (used by DDPM, dropped by every other sampler).
        self.variance_type = (VarianceType.FIXED_SMALL if variance_type is None
                              else VarianceType.parse(variance_type))
        self.timestep_spacing = TimestepSpacing.parse(timestep_spacing)
        self.timesteps = np.zeros(0, dtype=np.int64)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options `make_sampler` accepts for this sampler (its __init__ keywords)."""
        parameters = list(inspect.signature(cls.__init__).parameters)
        return tuple(p for p in parameters if p not in ("self", "schedule", "num_inference_steps"))

    @classmethod
    def default_num_inference_steps(cls) -> int | None:
        """The steps of `make_sampler` without a count (None: all T, DDPM's)."""
        return inspect.signature(cls.__init__).parameters["num_inference_steps"].default

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        signature = inspect.signature(cls.__init__)
        return {name: signature.parameters[name].default for name in cls.option_names()}

    @property
    def model_calls(self) -> int:
        """Model evaluations per sample (one batched call per step even with guidance)."""
        return len(self.timesteps)

    @property
    def num_inference_steps(self) -> int:
        return len(self.timesteps)

    def reset(self) -> None:
        """Forget any state of a previous run (multistep history)."""

    def timestep(self, index: int) -> int | float:
        """The model's timestep at call `index`: an int, or a float for fractional ones."""
        value = self.timesteps[index]
        return int(value) if np.issubdtype(self.timesteps.dtype, np.integer) else float(value)

    def prediction_of(self, model_output: np.ndarray, x_t: np.ndarray) -> np.ndarray:
        """The prediction channels of a model output (a learned variance's are dropped)."""
        return split_model_output(model_output, x_t, self.variance_type)[0]

    def step(
        self,
        model_output: np.ndarray,
        t: int | float,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        raise NotImplementedError

    def __repr__(self) -> str:
        def shown(value: Any) -> Any:  # an option as its plain string
            return value.value if isinstance(value, Option) else value

        options = ", ".join(f"{k}={shown(getattr(self, k, None))!r}" for k in self.option_names())
        return f"{type(self).__name__}({self.num_inference_steps} steps, {options})"


class SigmaSampler(Sampler):
    """Shared machinery of the samplers that step between noise levels `sigmas` (n + 1,
    float64, the last one final): DPM-Solver++, UniPC, Euler, Heun.

    Step i goes from sigmas[i] to sigmas[i + 1]. `data_prediction` turns a model output at
    step i into x0 (classifier-guided and thresholded where asked).
    """

    thresholding: bool = False
    clip_sample: bool = False

    def __init__(self, schedule: NoiseSchedule, prediction_type: PredictionType | str,
                 variance_type: VarianceType | str | None,
                 timestep_spacing: TimestepSpacing | str) -> None:
        super().__init__(schedule, prediction_type, variance_type, timestep_spacing)
        self.alphas_cumprod = sampling_alphas_cumprod(schedule)
        self.train_sigmas = sigmas_of(self.alphas_cumprod)
        self.log_sigmas = np.log(self.train_sigmas)
        self.sigmas = np.zeros(1)
        self._step_index = 0

    def reset(self) -> None:
        self._step_index = 0

    def _check_final_sigmas_type(self, final_sigmas_type: str) -> float:
        """The last sigma: 0 ("zero", the clean sample) or sigma at t = 0 ("sigma_min")."""
        check_choice("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min"))
        self.final_sigmas_type = final_sigmas_type
        return 0.0 if final_sigmas_type == "zero" else float(self.train_sigmas[0])

    def _check_thresholding(self, thresholding: bool, ratio: float, max_value: float) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must lie in (0, 1], got {ratio}")
        if not max_value >= 1:
            raise ValueError(f"sample_max_value must be >= 1, got {max_value}")
        self.thresholding = bool(thresholding)
        self.dynamic_thresholding_ratio = float(ratio)
        self.sample_max_value = float(max_value)

    def begin_step(self, t: int | float) -> int:
        """The index of this step, checked against `timesteps` (steps must come in order)."""
        index = self._step_index
        if index >= len(self.timesteps) or self.timestep(index) != t:
            expected = self.timestep(index) if index < len(self.timesteps) else "none (done)"
            raise ValueError(
                f"{self.name}: step {index} expects timestep {expected}, got {t}; steps must "
                "follow `timesteps` in order (call reset() to start a new run)"
            )
        self._step_index += 1
        return index

    def lambdas(self, index: int) -> float:
        """lambda_i = log(alpha_i / sigma_i) of the variance-preserving step i (DPM-Solver's
        half log-SNR)."""
        return log_snr_half(float(self.sigmas[index]))

    def data_prediction(
        self,
        model_output: np.ndarray,
        x_t: np.ndarray,
        sigma: float,
        classifier_gradient: np.ndarray | None = None,
    ) -> np.ndarray:
        """x0 from a model output at noise level sigma, x_t variance-preserving.

        With a classifier gradient g = s grad log p(y | x_t), eps is shifted by -sigma_t g
        (Dhariwal & Nichol 2021, eq. 14, as DDIM does) and x0 re-derived from it. Then the
        dynamic threshold or clipping, where the sampler's options ask for it.
        """
        alpha_t, sigma_t = alpha_sigma_of(sigma)
        prediction = self.prediction_of(model_output, x_t)
        x0, eps = x0_and_eps_from_output(prediction, x_t, alpha_t, sigma_t, self.prediction_type)
        if classifier_gradient is not None:
            eps = eps - cast(sigma_t, x_t) * classifier_gradient.astype(x_t.dtype)
            x0 = (x_t - cast(sigma_t, x_t) * eps) / cast(alpha_t, x_t)
        if self.thresholding:
            x0 = dynamic_threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        if self.clip_sample:
            x0 = get_array_module(x0).clip(x0, -self.clip_sample_range, self.clip_sample_range)
        return x0

    def set_solver_timesteps(self, num_inference_steps: int, use_karras_sigmas: bool,
                             final_sigma: float) -> None:
        """timesteps (int64) and sigmas as DPMSolverMultistep and UniPC set them: the
        schedule's sigmas at `solver_timesteps`, or Karras sigmas between the schedule's
        extremes (their timesteps rounded), then the final sigma."""
        self.use_karras_sigmas = bool(use_karras_sigmas)
        timesteps = solver_timesteps(self.schedule.num_train_timesteps, num_inference_steps,
                                     self.timestep_spacing)
        if use_karras_sigmas:
            check_karras(self.schedule)
            sigmas = karras_sigmas(float(self.train_sigmas[0]), float(self.train_sigmas[-1]),
                                   num_inference_steps)
            timesteps = sigma_to_t(sigmas, self.log_sigmas).round().astype(np.int64)
        else:
            sigmas = np.interp(timesteps, np.arange(len(self.train_sigmas)), self.train_sigmas)
        self.timesteps = timesteps
        self.sigmas = np.append(sigmas, final_sigma)

    def set_sigma_timesteps(self, num_inference_steps: int, use_karras_sigmas: bool) -> None:
        """timesteps (fractional) and sigmas as EulerDiscrete and HeunDiscrete set them: the
        schedule's sigmas interpolated at `sigma_timesteps`, or Karras sigmas between those
        ends and their fractional timesteps; then sigma 0."""
        self.use_karras_sigmas = bool(use_karras_sigmas)
        timesteps = sigma_timesteps(self.schedule.num_train_timesteps, num_inference_steps,
                                    self.timestep_spacing)
        sigmas = np.interp(timesteps, np.arange(len(self.train_sigmas)), self.train_sigmas)
        if use_karras_sigmas:
            check_karras(self.schedule)
            sigmas = karras_sigmas(float(sigmas[-1]), float(sigmas[0]), num_inference_steps)
            timesteps = sigma_to_t(sigmas, self.log_sigmas)
        self.timesteps = timesteps.astype(np.float64)
        self.sigmas = np.append(sigmas, 0.0)

    def to_sigma_space(self, x_t: np.ndarray, sigma: float) -> np.ndarray:
        """diffusers' sigma-space sample x = x_t sqrt(sigma^2 + 1) = x_t / alpha_t."""
        return x_t * cast(math.sqrt(sigma**2 + 1.0), x_t)

    def from_sigma_space(self, x: np.ndarray, sigma: float) -> np.ndarray:
        """The variance-preserving x_t = x / sqrt(sigma^2 + 1) (exact at sigma = 0)."""
        return x if sigma == 0 else x / cast(math.sqrt(sigma**2 + 1.0), x)
