"""Samplers: DDPM, DDIM, DPM-Solver++, Euler, Heun and UniPC, and the sampling loop.

    sampler = make_sampler("dpmsolver++", schedule, 20, solver_order=2, use_karras_sigmas=True)
    images = sample(model, schedule, (16, 1, 28, 28), sampler=sampler, seed=0)

One module per family: `ddpm_ddim`, `dpm_solver`, `euler_heun`, `unipc`, on the shared
`base` (timestep spacings, sigmas, x0 / eps conversion, thresholding); `loop` holds the
registry, guidance and `sample`. See `base` for the sampler protocol. The options every
sampler takes are the enums of `tinydiff.options` (or their strings).
"""

from tinydiff.options import PredictionType, TimestepSpacing, VarianceType
from tinydiff.samplers.base import (
    Sampler,
    SamplerStep,
    SigmaSampler,
    Trajectory,
    alpha_sigma_of,
    dynamic_threshold,
    inference_timesteps,
    karras_sigmas,
    sigma_to_t,
    sigmas_of,
    solver_timesteps,
)
from tinydiff.samplers.ddpm_ddim import DDIMSampler, DDPMSampler
from tinydiff.samplers.dpm_solver import DPMSolverMultistepSampler
from tinydiff.samplers.euler_heun import EulerSampler, HeunSampler
from tinydiff.samplers.loop import (
    DEFAULT_DDIM_STEPS,
    DEFAULT_GUIDANCE,
    SAMPLER_CLASSES,
    SAMPLERS,
    class_guidance,
    ddim_invert,
    make_sampler,
    model_calls_per_sample,
    model_device,
    model_prediction,
    sample,
    sampler_class,
)
from tinydiff.samplers.unipc import UniPCSampler

__all__ = [
    "PredictionType", "VarianceType", "TimestepSpacing",
    "SAMPLERS", "SAMPLER_CLASSES", "DEFAULT_DDIM_STEPS", "DEFAULT_GUIDANCE",
    "Sampler", "SigmaSampler", "SamplerStep", "Trajectory", "DDPMSampler", "DDIMSampler",
    "DPMSolverMultistepSampler", "EulerSampler", "HeunSampler", "UniPCSampler",
    "make_sampler", "sampler_class", "model_calls_per_sample", "sample", "model_prediction",
    "class_guidance", "model_device", "ddim_invert", "inference_timesteps", "solver_timesteps",
    "sigmas_of", "sigma_to_t", "karras_sigmas", "alpha_sigma_of", "dynamic_threshold",
]
