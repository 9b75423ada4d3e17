"""DDPM (ancestral) and DDIM sampling on the training timesteps.

`timesteps` holds the descending training timesteps visited. Unlike diffusers, the previous
timestep is always the next element of `timesteps` (then "clean", with alphas_cumprod 1), so
uneven spacings are exact.

Papers: Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM); Song et al. 2021,
"Denoising Diffusion Implicit Models" (DDIM). Both are written for any pair of timesteps
t > prev: beta_t below is the step's 1 - alphas_cumprod_t / alphas_cumprod_prev (improved
DDPM's respacing), which is the schedule's beta when prev = t - 1.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from autograd.backend import get_array_module
from tinydiff.diffusion import (
    array_of,
    learned_range_log_variance,
    predict_x0_and_eps,
    split_model_output,
)
from tinydiff.options import PredictionType, TimestepSpacing, VarianceType
from tinydiff.samplers.base import (
    DEFAULT_STEPS,
    Sampler,
    SamplerStep,
    cast,
    draw_noise,
    inference_timesteps,
)
from tinydiff.schedules import NoiseSchedule


def posterior_variance(alphas_cumprod_t: float, alphas_cumprod_prev: float) -> float:
    """beta tilde, the variance of q(x_prev | x_t, x0) between two (possibly non-adjacent)
    timesteps: (1 - alphas_cumprod_prev) / (1 - alphas_cumprod_t) beta_t (DDPM eq. 7)."""
    return ((1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod_t)
            * (1.0 - alphas_cumprod_t / alphas_cumprod_prev))


class DiscreteSampler(Sampler):
    """Shared timestep bookkeeping and x0 / eps prediction for the DDPM and DDIM samplers."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int | None,
        timestep_spacing: TimestepSpacing | str,
        prediction_type: PredictionType | str,
        variance_type: VarianceType | str | None,
        clip_sample: bool,
        clip_sample_range: float,
    ) -> None:
        super().__init__(schedule, prediction_type, variance_type, timestep_spacing)
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)
        steps = schedule.num_train_timesteps if num_inference_steps is None else num_inference_steps
        self.timesteps = inference_timesteps(schedule.num_train_timesteps, steps,
                                             self.timestep_spacing)
        self.prev_timesteps = np.append(self.timesteps[1:], -1)
        self._prev_of = {int(t): int(p) for t, p in zip(self.timesteps, self.prev_timesteps)}
        if (self.prediction_type is PredictionType.EPSILON
                and np.any(schedule.alphas_cumprod[self.timesteps] == 0)):
            raise ValueError(
                "epsilon prediction cannot recover x0 where alphas_cumprod is 0 (a "
                "zero-terminal-SNR schedule's last timestep): x0 = (x_t - eps) / 0. Use "
                "prediction_type='v_prediction' (or 'sample') with rescale_betas_zero_snr=True"
            )

    def previous_timestep(self, t: int) -> int:
        """The timestep after t in `timesteps`, or -1 (clean data) after the last one."""
        if int(t) not in self._prev_of:
            raise ValueError(f"timestep {t} is not in this sampler's timesteps")
        return self._prev_of[int(t)]

    def alphas_cumprod_at(self, t: int) -> tuple[float, float]:
        """(alphas_cumprod_t, alphas_cumprod_prev) as float64 scalars, prev the timestep after
        t in `timesteps`; alphas_cumprod at timestep -1 (clean data) is 1."""
        prev = self.previous_timestep(t)
        alphas_cumprod = self.schedule.alphas_cumprod
        return float(alphas_cumprod[t]), float(alphas_cumprod[prev]) if prev >= 0 else 1.0

    def predict_original(
        self, model_output: np.ndarray, t: int, x_t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x0, eps) from a model output (DDPM eq. 15 for epsilon); with clipping, eps is
        re-derived from the clipped x0."""
        t_batch = np.full(x_t.shape[0], t, dtype=np.int64)
        x0, eps = predict_x0_and_eps(
            self.schedule, x_t, t_batch, model_output, self.prediction_type
        )
        if self.clip_sample:
            x0 = get_array_module(x0).clip(x0, -self.clip_sample_range, self.clip_sample_range)
            _, eps = predict_x0_and_eps(self.schedule, x_t, t_batch, x0, PredictionType.SAMPLE)
        return x0, eps


class DDPMSampler(DiscreteSampler):
    """Ancestral sampling from p(x_prev | x_t) = q(x_prev | x_t, x0 = predicted x0)
    (Ho et al. 2020, eq. 6-7), diffusers' DDPMScheduler.

    variance_type: `fixed_small` (posterior variance, beta tilde), `fixed_large` (beta), or
    `learned_range` (the model output (N, 2C, ...) ends with v, see
    `diffusion.learned_range_log_variance`); between non-adjacent timesteps beta =
    1 - alphas_cumprod_t / alphas_cumprod_prev and beta tilde is the posterior variance
    between them (improved DDPM's respacing). No noise is added on the last step. With fewer
    steps than T this is "respaced" DDPM.
    """

    name: ClassVar[str] = "ddpm"
    stochastic: ClassVar[bool] = True

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int | None = None,
        timestep_spacing: TimestepSpacing | str = "leading",
        variance_type: VarianceType | str = "fixed_small",
        prediction_type: PredictionType | str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ) -> None:
        super().__init__(schedule, num_inference_steps, timestep_spacing, prediction_type,
                         variance_type, clip_sample, clip_sample_range)

    def step(
        self,
        model_output: np.ndarray,
        t: int,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        # 1. alphas_cumprod at t and at the previous timestep, and the step's beta_t
        alphas_cumprod_t, alphas_cumprod_prev = self.alphas_cumprod_at(t)
        beta_t = 1.0 - alphas_cumprod_t / alphas_cumprod_prev
        # 2. the prediction (and a learned variance's values) from the model output
        prediction, variance_values = split_model_output(model_output, x_t, self.variance_type)
        # 3. the "predicted x0" from it (DDPM eq. 15 for epsilon), clipped where asked
        x0, _ = self.predict_original(prediction, t, x_t)
        # 4. the posterior mean mu tilde(x_t, x0) of q(x_prev | x_t, x0) (DDPM eq. 7):
        #    sqrt(alphas_cumprod_prev) beta_t / (1 - alphas_cumprod_t) x0
        #    + sqrt(alpha_t) (1 - alphas_cumprod_prev) / (1 - alphas_cumprod_t) x_t
        x0_coef = math.sqrt(alphas_cumprod_prev) * beta_t / (1.0 - alphas_cumprod_t)
        x_t_coef = (math.sqrt(1.0 - beta_t) * (1.0 - alphas_cumprod_prev)
                    / (1.0 - alphas_cumprod_t))
        prev_sample = cast(x0_coef, x_t) * x0 + cast(x_t_coef, x_t) * x_t
        # 5. the variance Sigma of p(x_prev | x_t): beta tilde (DDPM eq. 7), beta_t, or learned
        variance = self.variance(alphas_cumprod_t, alphas_cumprod_prev, variance_values)
        if isinstance(variance, float):
            variance, std = cast(variance, x_t), cast(math.sqrt(variance), x_t)
        else:
            variance, std = variance.astype(x_t.dtype), get_array_module(variance).sqrt(
                variance).astype(x_t.dtype)
        # 6. classifier guidance: the mean shifted by Sigma s grad log p(y | x_t) (Dhariwal &
        #    Nichol 2021, algorithm 1)
        if classifier_gradient is not None:
            prev_sample = prev_sample + variance * classifier_gradient.astype(x_t.dtype)
        # 7. x_prev = mean + sqrt(Sigma) z, z ~ N(0, I), except on the last step (z = 0)
        if self.previous_timestep(t) >= 0:
            prev_sample = prev_sample + std * draw_noise(generator, x_t)
        return SamplerStep(prev_sample, x0)

    def variance(self, alphas_cumprod_t: float, alphas_cumprod_prev: float,
                 variance_values: np.ndarray | None = None) -> float | np.ndarray:
        """Sigma of p(x_prev | x_t) between two timesteps, float64: a float, or an (N, C, ...)
        array from a learned variance's values (on their device). For its log the posterior
        variance is clamped at 1e-20, as diffusers does (it is 0 on the last step, where no
        noise is added)."""
        beta_t = 1.0 - alphas_cumprod_t / alphas_cumprod_prev
        posterior = posterior_variance(alphas_cumprod_t, alphas_cumprod_prev)
        if self.variance_type is VarianceType.FIXED_SMALL:
            return float(posterior)
        if self.variance_type is VarianceType.FIXED_LARGE:
            return float(beta_t)
        values = array_of(variance_values).astype(np.float64)
        log_variance = learned_range_log_variance(
            values, math.log(max(posterior, 1e-20)), math.log(beta_t))
        return get_array_module(values).exp(log_variance)


class DDIMSampler(DiscreteSampler):
    """DDIM (Song et al. 2021, eq. 12): x_prev = sqrt(alphas_cumprod_prev) x0
    + sqrt(1 - alphas_cumprod_prev - sigma_t^2) eps + sigma_t z, diffusers' DDIMScheduler.

    sigma_t^2 = eta^2 * posterior variance (eq. 16); eta = 0 is deterministic, eta = 1 equals
    DDPM fixed_small. As in improved-diffusion, eps is re-derived from the clipped x0 when
    `clip_sample` is set. A learned variance's channels (variance_type learned_range) are
    dropped.
    """

    name: ClassVar[str] = "ddim"

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int = DEFAULT_STEPS,
        timestep_spacing: TimestepSpacing | str = "leading",
        eta: float = 0.0,
        prediction_type: PredictionType | str = "epsilon",
        variance_type: VarianceType | str | None = None,
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ) -> None:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        super().__init__(schedule, num_inference_steps, timestep_spacing, prediction_type,
                         variance_type, clip_sample, clip_sample_range)
        self.eta = float(eta)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def step(
        self,
        model_output: np.ndarray,
        t: int,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        # 1. the "predicted x0" and eps from the model output (DDIM eq. 9, the x0 of eq. 12;
        #    clipped where asked, eps then re-derived from it)
        x0, eps = self.predict_original(self.prediction_of(model_output, x_t), t, x_t)
        # 2. alphas_cumprod at t and at the previous timestep
        alphas_cumprod_t, alphas_cumprod_prev = self.alphas_cumprod_at(t)
        # 3. classifier guidance: eps - sqrt(1 - alphas_cumprod_t) s grad log p(y | x_t)
        #    (Dhariwal & Nichol 2021, eq. 14), and x0 re-derived from it
        if classifier_gradient is not None:
            eps = eps - cast(math.sqrt(1.0 - alphas_cumprod_t), x_t) * classifier_gradient.astype(
                x_t.dtype)
            x0 = (x_t - cast(math.sqrt(1.0 - alphas_cumprod_t), x_t) * eps) / cast(
                math.sqrt(alphas_cumprod_t), x_t)
        # 4. sigma_t^2 = eta^2 * posterior variance (DDIM eq. 16)
        variance = self.eta**2 * posterior_variance(alphas_cumprod_t, alphas_cumprod_prev)
        # 5. the "direction pointing to x_t", sqrt(1 - alphas_cumprod_prev - sigma_t^2) eps,
        #    and x_prev without the random noise (DDIM eq. 12)
        direction_coef = math.sqrt(max(1.0 - alphas_cumprod_prev - variance, 0.0))
        prev_sample = (cast(math.sqrt(alphas_cumprod_prev), x_t) * x0
                       + cast(direction_coef, x_t) * eps)
        # 6. the random noise sigma_t z of eq. 12, except on the last step
        if self.eta > 0 and self.previous_timestep(t) >= 0:
            noise = draw_noise(generator, x_t)
            prev_sample = prev_sample + cast(math.sqrt(variance), x_t) * noise
        return SamplerStep(prev_sample, x0)
