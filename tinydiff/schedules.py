"""Noise schedules for DDPM-style diffusion.

A `NoiseSchedule` turns a beta schedule into every per-timestep quantity the forward process,
the training objectives and the samplers need. All arrays are float64 with shape (T,), indexed
by the training timestep t = 0..T-1, following the conventions of diffusers' `DDPMScheduler`
and improved-diffusion's `GaussianDiffusion`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinydiff.options import BetaSchedule

DEFAULT_NUM_TRAIN_TIMESTEPS = 1000


def cosine_alphas_cumprod(t: float, offset: float = 0.008) -> float:
    """Improved DDPM's cosine schedule f(t) = cos((t + offset) / (1 + offset) pi / 2)^2 at
    continuous time t in [0, 1] (Nichol & Dhariwal 2021): alphas_cumprod is f(t) / f(0), the
    ratio `betas_for_alphas_cumprod` takes."""
    return math.cos((t + offset) / (1.0 + offset) * math.pi / 2) ** 2


def betas_for_alphas_cumprod(
    num_timesteps: int,
    alphas_cumprod_fn: Callable[[float], float] = cosine_alphas_cumprod,
    max_beta: float = 0.999,
) -> np.ndarray:
    """Discretise a continuous alphas_cumprod_fn(t), t in [0, 1], into (T,) betas
    beta_i = 1 - alphas_cumprod_fn((i + 1) / T) / alphas_cumprod_fn(i / T), capped at
    `max_beta`."""
    betas = [
        min(1.0 - alphas_cumprod_fn((i + 1) / num_timesteps) / alphas_cumprod_fn(i / num_timesteps),
            max_beta)
        for i in range(num_timesteps)
    ]
    return np.asarray(betas, dtype=np.float64)


def make_betas(
    beta_schedule: BetaSchedule | str, num_train_timesteps: int, beta_start: float,
    beta_end: float
) -> np.ndarray:
    """The (T,) float64 betas of a named schedule."""
    if beta_schedule == BetaSchedule.LINEAR:
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if beta_schedule == BetaSchedule.SCALED_LINEAR:
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps) ** 2
    if beta_schedule == BetaSchedule.SQUAREDCOS_CAP_V2:
        return betas_for_alphas_cumprod(num_train_timesteps)
    if beta_schedule == BetaSchedule.SIGMOID:
        sigmoid = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, num_train_timesteps)))
        return sigmoid * (beta_end - beta_start) + beta_start
    raise BetaSchedule.unknown(beta_schedule)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale betas so the last timestep has zero SNR (Lin et al. 2023, Algorithm 1).

    sqrt_alphas_cumprod is shifted so its last value is exactly 0, then scaled so its first
    value is unchanged. The returned last beta is exactly 1.
    """
    sqrt_alphas_cumprod = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_alphas_cumprod[0], sqrt_alphas_cumprod[-1]
    sqrt_alphas_cumprod = (sqrt_alphas_cumprod - last) * (first / (first - last))
    alphas_cumprod = sqrt_alphas_cumprod**2
    alphas = np.concatenate([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


def _check_betas(betas: np.ndarray) -> None:
    if betas.ndim != 1 or betas.size < 2:
        raise ValueError(f"betas must be a 1-D array of length >= 2, got shape {betas.shape}")
    if not np.all(np.isfinite(betas)):
        raise ValueError("betas must be finite")
    if np.any(betas <= 0.0) or np.any(betas[:-1] >= 1.0) or betas[-1] > 1.0:
        raise ValueError("betas must lie in (0, 1); only the last beta may equal 1 (zero SNR)")


class NoiseSchedule:
    """Per-timestep coefficients of q(x_t | x_0) = N(sqrt_alphas_cumprod_t x_0,
    (1 - alphas_cumprod_t) I) (Ho et al. 2020, eq. 4).

    Args:
        num_train_timesteps: T (default 1000); must equal len(betas) when betas are given.
        beta_schedule: a `BetaSchedule` or its name, parsed here (ignored when `betas` is
            given; the attribute is then "custom").
        beta_start, beta_end: first / last beta of the linear, scaled_linear, sigmoid schedules.
        rescale_betas_zero_snr: rescale to zero terminal SNR (see `rescale_zero_terminal_snr`).
        betas: explicit (T,) betas instead of a named schedule.

    Attributes (float64, shape (T,)): betas, alphas, alphas_cumprod, alphas_cumprod_prev,
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, posterior_variance,
    posterior_log_variance_clipped, posterior_mean_coef1, posterior_mean_coef2, snr.
    """

    def __init__(
        self,
        num_train_timesteps: int | None = None,
        beta_schedule: BetaSchedule | str = BetaSchedule.LINEAR,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        rescale_betas_zero_snr: bool = False,
        betas: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if betas is not None:
            betas = np.array(betas, dtype=np.float64)
            if num_train_timesteps is not None and num_train_timesteps != betas.size:
                raise ValueError(
                    f"num_train_timesteps={num_train_timesteps} but len(betas)={betas.size}"
                )
            beta_schedule = "custom"
        else:
            if num_train_timesteps is None:
                num_train_timesteps = DEFAULT_NUM_TRAIN_TIMESTEPS
            if isinstance(num_train_timesteps, bool) or not isinstance(
                num_train_timesteps, int | np.integer
            ):
                raise ValueError(f"num_train_timesteps must be an int, got {num_train_timesteps!r}")
            if num_train_timesteps < 2:
                raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
            beta_schedule = BetaSchedule.parse(beta_schedule)
            uses_beta_range = beta_schedule is not BetaSchedule.SQUAREDCOS_CAP_V2
            if uses_beta_range and not 0.0 < beta_start <= beta_end < 1.0:
                raise ValueError(
                    f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}"
                )
            betas = make_betas(beta_schedule, int(num_train_timesteps), beta_start, beta_end)
        _check_betas(betas)
        # Explicit betas are stored as given (before any rescale) so `to_dict` round-trips.
        self._explicit_betas = betas.copy() if beta_schedule == "custom" else None
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
            _check_betas(betas)

        self.num_train_timesteps = int(betas.size)
        self.beta_schedule: BetaSchedule | str = beta_schedule  # a member, or "custom"
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.rescale_betas_zero_snr = bool(rescale_betas_zero_snr)
        self._set_derived_arrays(betas)

    def _set_derived_arrays(self, betas: np.ndarray) -> None:
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.concatenate([[1.0], self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        # q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance) (Ho et al.
        # 2020, eq. 6-7)
        one_minus_alphas_cumprod_prev = 1.0 - self.alphas_cumprod_prev
        one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.posterior_variance = betas * one_minus_alphas_cumprod_prev / one_minus_alphas_cumprod
        # posterior_variance[0] is 0; improved-diffusion clips its log with element 1.
        self.posterior_log_variance_clipped = np.log(
            np.concatenate([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / one_minus_alphas_cumprod
        )
        self.posterior_mean_coef2 = (
            one_minus_alphas_cumprod_prev * np.sqrt(self.alphas) / one_minus_alphas_cumprod
        )

    def __len__(self) -> int:
        return self.num_train_timesteps

    def __repr__(self) -> str:
        if self.beta_schedule == "custom":
            return f"NoiseSchedule(custom betas, T={self.num_train_timesteps})"
        return f"NoiseSchedule({self.to_dict()})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config from which `from_dict` rebuilds an identical schedule."""
        if self.beta_schedule == "custom":
            return {
                "betas": [float(b) for b in self._explicit_betas],
                "rescale_betas_zero_snr": self.rescale_betas_zero_snr,
            }
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule.value,  # a plain string in files
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "rescale_betas_zero_snr": self.rescale_betas_zero_snr,
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> NoiseSchedule:
        """Rebuild a schedule from `to_dict()` output."""
        return cls(**config)
