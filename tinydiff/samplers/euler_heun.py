"""Euler and Heun solvers of the probability-flow ODE in sigma space (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", algorithm 1),
diffusers' EulerDiscreteScheduler and HeunDiscreteScheduler (deterministic: s_churn 0).

In diffusers' variable x = x_t / alpha_t the ODE is dx / dsigma = (x - x0(x, sigma)) / sigma
(eq. 1 with the score of eq. 3, (x0 - x) / sigma^2, and sigma(t) = t). The model is called
at fractional timesteps: those of the noise levels, interpolated in log sigma (`sigma_to_t`)
where Karras sigmas are used.
`step` takes and returns variance-preserving x_t, converting at each end.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from tinydiff.options import PredictionType, TimestepSpacing, VarianceType
from tinydiff.samplers.base import SamplerStep, SigmaSampler
from tinydiff.schedules import NoiseSchedule


class EulerSampler(SigmaSampler):
    """Euler's method in sigma space: one model call per step, first order.

    Options and defaults are diffusers' EulerDiscreteScheduler's (timestep_spacing
    "linspace", whose timesteps are fractional, final sigma 0).
    """

    name: ClassVar[str] = "euler"

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int = 50,
        prediction_type: PredictionType | str = "epsilon",
        use_karras_sigmas: bool = False,
        timestep_spacing: TimestepSpacing | str = "linspace",
        variance_type: VarianceType | str | None = None,
    ) -> None:
        super().__init__(schedule, prediction_type, variance_type, timestep_spacing)
        self.set_sigma_timesteps(num_inference_steps, use_karras_sigmas)

    def step(
        self,
        model_output: np.ndarray,
        t: int | float,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        # 1. the step's noise levels: from sigmas[i] to sigmas[i + 1]
        i = self.begin_step(t)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        # 2. x0 = D(x; sigma) from the model output at sigma (guided / clipped where asked)
        x0 = self.data_prediction(model_output, x_t, sigma, classifier_gradient)
        # 3. the ODE derivative d = (x - x0) / sigma in x = x_t / alpha_t (Karras et al.
        #    2022, algorithm 1)
        x = self.to_sigma_space(x_t, sigma)
        derivative = (x - x0) / x.dtype.type(sigma)
        # 4. an Euler step to sigma_next, then back to the variance-preserving x_t
        prev_sample = x + derivative * x.dtype.type(sigma_next - sigma)
        return SamplerStep(self.from_sigma_space(prev_sample, sigma_next), x0)


class HeunSampler(SigmaSampler):
    """Heun's second-order method in sigma space (Karras et al. 2022, algorithm 1): an Euler
    step to sigma_next, then the model again there and the step redone with the mean of the
    two derivatives. As in diffusers, `timesteps` lists each inner timestep twice and `step`
    is called once per model call: 2n - 1 calls for n steps (the last step, to sigma 0, is
    Euler's).

    Options and defaults are diffusers' HeunDiscreteScheduler's (clip_sample off).
    """

    name: ClassVar[str] = "heun"

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int = 50,
        prediction_type: PredictionType | str = "epsilon",
        use_karras_sigmas: bool = False,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        timestep_spacing: TimestepSpacing | str = "linspace",
        variance_type: VarianceType | str | None = None,
    ) -> None:
        super().__init__(schedule, prediction_type, variance_type, timestep_spacing)
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.clip_sample, self.clip_sample_range = bool(clip_sample), float(clip_sample_range)
        self.set_sigma_timesteps(num_inference_steps, use_karras_sigmas)
        # [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0] and [t0, t1, t1, ..., t_{n-1}, t_{n-1}]
        self.sigmas = np.concatenate([self.sigmas[:1], np.repeat(self.sigmas[1:-1], 2),
                                      self.sigmas[-1:]])
        self.timesteps = np.concatenate([self.timesteps[:1], np.repeat(self.timesteps[1:], 2)])
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.prev_derivative = self.dt = self.first_sample = None

    def step(
        self,
        model_output: np.ndarray,
        t: int | float,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        # 1. this call's noise levels: x_t is at sigmas[i], the step ends at sigmas[i + 1]
        i = self.begin_step(t)
        sigma_in, sigma_out = float(self.sigmas[i]), float(self.sigmas[i + 1])
        # 2. x0 = D(x; sigma) from the model output at this call's noise level
        x0 = self.data_prediction(model_output, x_t, sigma_in, classifier_gradient)
        # 3. the ODE derivative d = (x - x0) / sigma in x = x_t / alpha_t (Karras et al.
        #    2022, algorithm 1: d_i on a step's first call, d'_i on its second)
        x = self.to_sigma_space(x_t, sigma_in)
        derivative = (x - x0) / x.dtype.type(sigma_in)
        if self.dt is None:
            # 4a. first call of a step: the Euler step to sigma_next, kept for the correction
            self.prev_derivative, self.dt, self.first_sample = (
                derivative, sigma_out - sigma_in, x)
            prev_sample = x + derivative * x.dtype.type(self.dt)
        else:
            # 4b. second call, at sigma_next: the 2nd order correction, the step redone with
            #     the mean of both derivatives (the trapezoid rule)
            derivative = (self.prev_derivative + derivative) / x.dtype.type(2)
            prev_sample = self.first_sample + derivative * x.dtype.type(self.dt)
            self.prev_derivative = self.dt = self.first_sample = None
        return SamplerStep(self.from_sigma_space(prev_sample, sigma_out), x0)
