"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models"), multistep, diffusers' DPMSolverMultistepScheduler with
algorithm_type="dpmsolver++".

The probability-flow ODE in the data-prediction form, solved in lambda = log(alpha_t /
sigma_t) with the earlier steps' x0 predictions as a multistep history.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from tinydiff.options import PredictionType, TimestepSpacing, VarianceType
from tinydiff.samplers.base import (
    SamplerStep,
    SigmaSampler,
    alpha_sigma_of,
    cast,
    check_choice,
)
from tinydiff.schedules import NoiseSchedule

SOLVER_TYPES = ("midpoint", "heun")


def check_solver_order(solver_order: int) -> int:
    if isinstance(solver_order, bool) or solver_order not in (1, 2, 3):
        raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}")
    return int(solver_order)


class DPMSolverMultistepSampler(SigmaSampler):
    """DPM-Solver++ 1S / 2M / 3M (`solver_order` 1, 2, 3): one model call per step.

    Options and defaults are diffusers' (timestep_spacing "linspace", solver_type "midpoint",
    lower_order_final True, final_sigmas_type "zero"). `thresholding` applies Imagen's dynamic
    threshold to each x0 prediction (pixel-space models only; with sample_max_value 1 it is
    clipping to [-1, 1]). `variance_type` learned_range: the model's variance channels are
    dropped. The first steps use lower orders until enough history exists, and with
    lower_order_final (or final_sigmas_type "zero") the last step is first order.
    """

    name: ClassVar[str] = "dpmsolver++"

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int = 20,
        solver_order: int = 2,
        prediction_type: PredictionType | str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        use_karras_sigmas: bool = False,
        final_sigmas_type: str = "zero",
        timestep_spacing: TimestepSpacing | str = "linspace",
        variance_type: VarianceType | str | None = None,
    ) -> None:
        super().__init__(schedule, prediction_type, variance_type, timestep_spacing)
        self.solver_order = check_solver_order(solver_order)
        check_choice("solver_type", solver_type, SOLVER_TYPES)
        self.solver_type = solver_type
        self.lower_order_final = bool(lower_order_final)
        self._check_thresholding(thresholding, dynamic_thresholding_ratio, sample_max_value)
        final_sigma = self._check_final_sigmas_type(final_sigmas_type)
        self.set_solver_timesteps(num_inference_steps, use_karras_sigmas, final_sigma)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.model_outputs: list[np.ndarray] = []  # x0 predictions, newest last

    def order_at(self, index: int) -> int:
        """The order used at step `index` (diffusers' warm-up and lower_order_final rules)."""
        n = len(self.timesteps)
        final = index == n - 1 and (
            (self.lower_order_final and n < 15) or self.final_sigmas_type == "zero")
        second_last = index == n - 2 and self.lower_order_final and n < 15
        lower_order_nums = min(index, self.solver_order)  # earlier outputs in the history
        if self.solver_order == 1 or lower_order_nums < 1 or final:
            return 1
        if self.solver_order == 2 or lower_order_nums < 2 or second_last:
            return 2
        return 3

    def step(
        self,
        model_output: np.ndarray,
        t: int | float,
        x_t: np.ndarray,
        generator: np.random.Generator | None = None,
        classifier_gradient: np.ndarray | None = None,
    ) -> SamplerStep:
        # 1. the step index: from sigmas[i] to sigmas[i + 1]
        i = self.begin_step(t)
        # 2. DPM-Solver++'s data prediction x0_theta(x_t, t) = (x_t - sigma_t eps) / alpha_t
        #    (guided / thresholded where asked), kept as the multistep history
        x0 = self.data_prediction(model_output, x_t, float(self.sigmas[i]), classifier_gradient)
        self.model_outputs = (self.model_outputs + [x0])[-self.solver_order:]
        # 3. one update of the order available (warm-up, lower_order_final): DPM-Solver++(1)
        #    (= DDIM), 2M (algorithm 2) or 3M
        order = self.order_at(i)
        if order == 1:
            prev_sample = self.first_order_update(x_t, i)
        elif order == 2:
            prev_sample = self.second_order_update(x_t, i)
        else:
            prev_sample = self.third_order_update(x_t, i)
        return SamplerStep(prev_sample, x0)

    def first_order_update(self, x_s: np.ndarray, i: int) -> np.ndarray:
        """DPM-Solver++(1), eq. (5) with h = lambda_t - lambda_s (= DDIM, eta 0):
        x_t = (sigma_t / sigma_s) x_s - alpha_t (e^-h - 1) x0_s."""
        m0 = self.model_outputs[-1]
        if self.sigmas[i + 1] == 0:  # the limit h -> inf: the clean sample is x0
            return m0
        alpha_t, sigma_t = alpha_sigma_of(float(self.sigmas[i + 1]))
        _, sigma_s = alpha_sigma_of(float(self.sigmas[i]))
        h = self.lambdas(i + 1) - self.lambdas(i)
        return cast(sigma_t / sigma_s, x_s) * x_s - cast(alpha_t * math.expm1(-h), x_s) * m0

    def second_order_update(self, x_s0: np.ndarray, i: int) -> np.ndarray:
        """DPM-Solver++(2M), algorithm 2: D0 = m0, D1 = (m0 - m1) / r0 with r0 = h_0 / h;
        midpoint: x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) (D0 + D1 / 2);
        heun: ... - alpha_t (e^-h - 1) D0 + alpha_t ((e^-h - 1) / h + 1) D1."""
        m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
        alpha_t, sigma_t = alpha_sigma_of(float(self.sigmas[i + 1]))
        _, sigma_s0 = alpha_sigma_of(float(self.sigmas[i]))
        lambda_t, lambda_s0, lambda_s1 = self.lambdas(i + 1), self.lambdas(i), self.lambdas(i - 1)
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        d0, d1 = m0, cast(1.0 / r0, x_s0) * (m0 - m1)
        phi_1 = math.expm1(-h)  # e^-h - 1
        x = cast(sigma_t / sigma_s0, x_s0) * x_s0 - cast(alpha_t * phi_1, x_s0) * d0
        if self.solver_type == "midpoint":
            return x - cast(0.5 * alpha_t * phi_1, x_s0) * d1
        return x + cast(alpha_t * (phi_1 / h + 1.0), x_s0) * d1

    def third_order_update(self, x_s0: np.ndarray, i: int) -> np.ndarray:
        """DPM-Solver++(3M) (Lu et al. 2022, appendix; diffusers' third-order update):
        D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1);
        x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) D0 + alpha_t ((e^-h - 1) / h + 1) D1
              - alpha_t ((e^-h - 1 + h) / h^2 - 1/2) D2."""
        m0, m1, m2 = self.model_outputs[-1], self.model_outputs[-2], self.model_outputs[-3]
        alpha_t, sigma_t = alpha_sigma_of(float(self.sigmas[i + 1]))
        _, sigma_s0 = alpha_sigma_of(float(self.sigmas[i]))
        lambda_t, lambda_s0 = self.lambdas(i + 1), self.lambdas(i)
        lambda_s1, lambda_s2 = self.lambdas(i - 1), self.lambdas(i - 2)
        h, h_0, h_1 = lambda_t - lambda_s0, lambda_s0 - lambda_s1, lambda_s1 - lambda_s2
        r0, r1 = h_0 / h, h_1 / h
        d1_0, d1_1 = cast(1.0 / r0, x_s0) * (m0 - m1), cast(1.0 / r1, x_s0) * (m1 - m2)
        d1 = d1_0 + cast(r0 / (r0 + r1), x_s0) * (d1_0 - d1_1)
        d2 = cast(1.0 / (r0 + r1), x_s0) * (d1_0 - d1_1)
        phi_1 = math.expm1(-h)
        return (cast(sigma_t / sigma_s0, x_s0) * x_s0
                - cast(alpha_t * phi_1, x_s0) * m0
                + cast(alpha_t * (phi_1 / h + 1.0), x_s0) * d1
                - cast(alpha_t * ((phi_1 + h) / h**2 - 0.5), x_s0) * d2)
