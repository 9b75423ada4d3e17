"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
Sampling of Diffusion Models"), diffusers' UniPCMultistepScheduler with predict_x0=True.

Each step first corrects the previous step's result with the new model output (UniC,
eq. 8 / algorithm 2), then predicts the next sample (UniP, algorithm 1), both in the
data-prediction form in lambda = log(alpha_t / sigma_t). The corrector costs no extra model
call: one call per step.
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
from tinydiff.samplers.dpm_solver import check_solver_order
from tinydiff.schedules import NoiseSchedule

SOLVER_TYPES = ("bh1", "bh2")


class UniPCSampler(SigmaSampler):
    """UniPC with B(h) = h (bh1) or e^h - 1 (bh2), `solver_order` 1-3 (the predictor's order;
    the corrector adds one). Options and defaults are diffusers' (solver_type "bh2",
    lower_order_final True, timestep_spacing "linspace", final sigma 0); `disable_corrector`
    lists step indices whose result is not corrected.
    """

    name: ClassVar[str] = "unipc"

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_inference_steps: int = 20,
        solver_order: int = 2,
        prediction_type: PredictionType | str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        solver_type: str = "bh2",
        lower_order_final: bool = True,
        disable_corrector: tuple[int, ...] = (),
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
        self.disable_corrector = tuple(int(i) for i in disable_corrector)
        self._check_thresholding(thresholding, dynamic_thresholding_ratio, sample_max_value)
        final_sigma = self._check_final_sigmas_type(final_sigmas_type)
        self.set_solver_timesteps(num_inference_steps, use_karras_sigmas, final_sigma)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.model_outputs: list[np.ndarray] = []  # x0 predictions, newest last
        self.last_sample: np.ndarray | None = None
        self.this_order = 0

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
        # 2. the data prediction x0 = (x_t - sigma_t eps) / alpha_t at this step
        x0 = self.data_prediction(model_output, x_t, float(self.sigmas[i]), classifier_gradient)
        # 3. UniC (algorithm 2): correct x_t, the previous step's prediction, with this model
        #    output
        if i > 0 and (i - 1) not in self.disable_corrector and self.last_sample is not None:
            x_t = self.corrector_update(x0, self.last_sample, x_t, i, self.this_order)
        self.model_outputs = (self.model_outputs + [x0])[-self.solver_order:]
        # 4. the order: warm-up from the history, lower at the end (lower_order_final)
        order = self.solver_order
        if self.lower_order_final:
            order = min(order, len(self.timesteps) - i)
        self.this_order = min(order, len(self.model_outputs))
        if self.sigmas[i + 1] == 0:  # to the clean sample: the first-order limit, x0
            self.this_order = 1
        # 5. UniP (algorithm 1): predict the next sample
        self.last_sample = x_t
        return SamplerStep(self.predictor_update(x_t, i, self.this_order), x0)

    def _coefficients(self, h: float, rks: list[float], order: int):
        """UniPC's linear system (algorithm 1/2): R[k - 1] = rks^(k - 1) and
        b[k - 1] = h phi_k(h) k! / B(h), with hh = -h (data prediction), h phi_1 = e^hh - 1,
        phi_{k+1} from phi_k / hh - 1 / (k + 1)!; returns (R, b, h_phi_1, B_h)."""
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        factorial = 1
        b_h = hh if self.solver_type == "bh1" else math.expm1(hh)
        rks_array = np.asarray(rks + [1.0], dtype=np.float64)
        rows, b = [], []
        for k in range(1, order + 1):
            rows.append(rks_array ** (k - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        return np.stack(rows), np.asarray(b), h_phi_1, b_h

    def _differences(self, i_ref: int, h: float, order: int, lambda_ref: float, m0):
        """rk = (lambda_{s_k} - lambda_ref) / h and D1_k = (m_k - m0) / rk for the k = 1 ..
        order - 1 earlier outputs, the step index of the k-th being i_ref - k."""
        rks, d1s = [], []
        for k in range(1, order):
            mk = self.model_outputs[-(k + 1)]
            rk = (self.lambdas(i_ref - k) - lambda_ref) / h
            rks.append(rk)
            d1s.append(cast(1.0 / rk, m0) * (mk - m0))
        return rks, d1s

    def predictor_update(self, x: np.ndarray, i: int, order: int) -> np.ndarray:
        """UniP-p (algorithm 1 with B(h)): x_t = (sigma_t / sigma_s0) x - alpha_t h phi_1 m0
        - alpha_t B(h) sum_k rho_k D1_k; rho = [1/2] for order 2, else R^-1 b on the first
        order - 1 rows."""
        m0 = self.model_outputs[-1]
        if self.sigmas[i + 1] == 0 and order == 1:  # the limit h -> inf: x0 itself
            return m0
        alpha_t, sigma_t = alpha_sigma_of(float(self.sigmas[i + 1]))
        _, sigma_s0 = alpha_sigma_of(float(self.sigmas[i]))
        lambda_s0 = self.lambdas(i)
        h = self.lambdas(i + 1) - lambda_s0
        rks, d1s = self._differences(i, h, order, lambda_s0, m0)
        r, b, h_phi_1, b_h = self._coefficients(h, rks, order)
        x_t = cast(sigma_t / sigma_s0, x) * x - cast(alpha_t * h_phi_1, x) * m0
        if d1s:
            rhos = [0.5] if order == 2 else np.linalg.solve(r[:-1, :-1], b[:-1])
            prediction = sum(cast(rho, x) * d for rho, d in zip(rhos, d1s))
            x_t = x_t - cast(alpha_t * b_h, x) * prediction
        return x_t

    def corrector_update(self, model_t: np.ndarray, last_sample: np.ndarray,
                         this_sample: np.ndarray, i: int, order: int) -> np.ndarray:
        """UniC (algorithm 2): from the previous step's x (at step i - 1) and its history m0,
        with the new output model_t at step i: x_t = (sigma_t / sigma_s0) x - alpha_t h phi_1 m0
        - alpha_t B(h) (sum_k rho_k D1_k + rho_last (model_t - m0)); rho = [1/2] for order 1,
        else R^-1 b."""
        m0 = self.model_outputs[-1]
        alpha_t, sigma_t = alpha_sigma_of(float(self.sigmas[i]))
        _, sigma_s0 = alpha_sigma_of(float(self.sigmas[i - 1]))
        lambda_s0 = self.lambdas(i - 1)
        h = self.lambdas(i) - lambda_s0
        rks, d1s = self._differences(i - 1, h, order, lambda_s0, m0)
        r, b, h_phi_1, b_h = self._coefficients(h, rks, order)
        rhos = [0.5] if order == 1 else np.linalg.solve(r, b)
        x = last_sample
        x_t = cast(sigma_t / sigma_s0, x) * x - cast(alpha_t * h_phi_1, x) * m0
        correction = sum((cast(rho, x) * d for rho, d in zip(rhos[:-1], d1s)),
                         cast(rhos[-1], x) * (model_t - m0))
        return x_t - cast(alpha_t * b_h, x) * correction
