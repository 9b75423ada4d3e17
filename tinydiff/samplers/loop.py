"""The sampler registry, model calls (classifier-free guidance) and the sampling loop.

A model is called as `model(x_t, t, **cond)` with x_t of shape (N, ...) and t a host array of
shape (N,): int64 for the samplers on training timesteps, float64 for the sigma-space ones
(Euler, Heun: fractional timesteps, as diffusers calls the UNet). Its output may be an array
or a Tensor. The loops build no graphs themselves; wrap them in the engine's no_grad. Every
random draw uses the `numpy.random.Generator` that is passed in (on the host, so a seed gives
the same samples on every device); the batch dtype (float32 by default) is kept.

Devices: `step` and `model_prediction` compute on the device of x_t (NumPy or CuPy arrays).
`sample` runs its loop on `device` (default: that of the model's parameters) and returns
NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from autograd.backend import CPU, Device, device_of, get_array_module, to_device
from tinydiff.diffusion import array_of, learns_variance, shape_of, split_model_output
from tinydiff.options import PredictionType, TimestepSpacing, VarianceType
from tinydiff.samplers.base import DEFAULT_STEPS, Sampler, Trajectory, cast, draw_noise
from tinydiff.samplers.ddpm_ddim import DDIMSampler, DDPMSampler
from tinydiff.samplers.dpm_solver import DPMSolverMultistepSampler
from tinydiff.samplers.euler_heun import EulerSampler, HeunSampler
from tinydiff.samplers.unipc import UniPCSampler
from tinydiff.schedules import NoiseSchedule

SAMPLER_CLASSES: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (DDPMSampler, DDIMSampler, DPMSolverMultistepSampler, EulerSampler, HeunSampler,
                UniPCSampler)
}
SAMPLERS = tuple(SAMPLER_CLASSES)
# Every option name of some sampler: `sample(**kwargs)` sends these to the sampler, the rest
# to the model as conditioning.
SAMPLER_OPTION_NAMES = frozenset(
    name for cls in SAMPLER_CLASSES.values() for name in cls.option_names())
DEFAULT_DDIM_STEPS = DEFAULT_STEPS
# The classifier-free guidance scale the command line and examples use for class-conditional
# models (w = 1: the conditional model alone). Chosen by the runs in the README.
DEFAULT_GUIDANCE = 2.0


def sampler_class(name: str) -> type[Sampler]:
    if name not in SAMPLER_CLASSES:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLERS}")
    return SAMPLER_CLASSES[name]


def model_calls_per_sample(name: str, num_inference_steps: int) -> int:
    """Model calls one sample costs with `name` at n steps (guidance: one batched call):
    n, except Heun's 2n - 1."""
    return 2 * num_inference_steps - 1 if name == "heun" else num_inference_steps


def make_sampler(
    name: str,
    schedule: NoiseSchedule,
    num_inference_steps: int | None = None,
    **options: Any,
) -> Sampler:
    """The sampler `name` (one of `SAMPLERS`) for `schedule` at `num_inference_steps` (default:
    T for DDPM, the sampler's own default, at most T, otherwise), with its options validated
    here, once: an option it does not take is refused with the list of those it does."""
    cls = sampler_class(name)
    allowed = cls.option_names()
    unknown = [option for option in options if option not in allowed]
    if unknown:
        raise ValueError(
            f"sampler {name!r} has no option {unknown[0]!r}; its options are "
            f"{', '.join(allowed)}")
    default = cls.default_num_inference_steps()
    if num_inference_steps is None and default is not None:
        num_inference_steps = min(default, schedule.num_train_timesteps)
    return cls(schedule, num_inference_steps, **options)


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


def timestep_batch(t: int | float, batch: int) -> np.ndarray:
    """t for a batch of N: int64 for an integer timestep, float64 for a fractional one."""
    integral = isinstance(t, int | np.integer)
    return np.full(batch, t, dtype=np.int64 if integral else np.float64)


def model_prediction(
    model: Callable[..., Any],
    x_t: np.ndarray,
    t: int | float,
    cond: Mapping[str, Any],
    guidance_scale: float | None = None,
    null_cond: Mapping[str, Any] | None = None,
    variance_type: VarianceType | str = VarianceType.FIXED_SMALL,
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
        output = to_device(array_of(model(x_t, timestep_batch(t, batch), **cond)), device)
    else:
        if null_cond is None or set(null_cond) != set(cond) or not cond:
            raise ValueError(
                "guidance needs cond kwargs and null_cond with the same keys, e.g. "
                "class_labels=labels, null_cond={'class_labels': null_label}"
            )
        conditional, unconditional = _batched_cond(cond, batch), _batched_cond(null_cond, batch)
        both = {k: _concatenate(conditional[k], unconditional[k]) for k in conditional}
        output = to_device(array_of(model(xp.concatenate([x_t, x_t]),
                                          timestep_batch(t, 2 * batch), **both)), device)
        if output.shape[:1] != (2 * batch,):
            raise ValueError(f"model output has shape {output.shape}, expected leading {2 * batch}")
        out_cond, out_uncond = output[:batch], output[batch:]
        guided = out_uncond + cast(float(guidance_scale), out_cond) * (out_cond - out_uncond)
        if learns_variance(variance_type) and out_cond.ndim > 1:
            channels = x_t.shape[1]
            guided[:, channels:] = out_cond[:, channels:]
        output = guided
    split_model_output(output, x_t, variance_type)  # checks the shape
    return output.astype(x_t.dtype, copy=False)


def _concatenate(a, b):
    """Two conditioning arrays end to end, on the device of the first (labels: the host)."""
    return get_array_module(a).concatenate([a, to_device(b, device_of(a))])


def model_device(model: Any) -> Device:
    """The device of a model's parameters (the CPU for a model without any)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return CPU if first is None else first.device


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


def resolve_sampler(
    sampler: str | Sampler,
    schedule: NoiseSchedule,
    num_inference_steps: int | None,
    options: Mapping[str, Any],
) -> Sampler:
    """A sampler object: `sampler` itself (then no options or other step count may be given),
    or `make_sampler(sampler, schedule, num_inference_steps, **options)`."""
    if isinstance(sampler, Sampler):
        if options:
            raise ValueError(
                f"sampler options ({', '.join(options)}) are set when the sampler is built: "
                f"make_sampler({sampler.name!r}, schedule, steps, ...), not in sample()")
        if num_inference_steps is not None and num_inference_steps != sampler.num_inference_steps:
            raise ValueError(f"num_inference_steps={num_inference_steps}, but the sampler was "
                             f"built for {sampler.num_inference_steps}")
        if not np.array_equal(sampler.schedule.alphas_cumprod, schedule.alphas_cumprod):
            raise ValueError("the sampler was built for another schedule")
        return sampler
    return make_sampler(sampler, schedule, num_inference_steps, **options)


def _progress_bar(progress: Any, total: int):
    """(bar, owned): a new tqdm bar for `progress=True`, the caller's bar, or None."""
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="call", desc="sampling", dynamic_ncols=True), True
    return (progress or None), False


def sample(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    shape: Sequence[int],
    sampler: str | Sampler = "ddim",
    num_inference_steps: int | None = None,
    *,
    generator: np.random.Generator | None = None,
    seed: int | None = None,
    x_T: np.ndarray | None = None,
    guidance_scale: float | None = None,
    null_cond: Mapping[str, Any] | None = None,
    classifier_grad_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    classifier_scale: float = 1.0,
    return_trajectory: bool = False,
    trajectory_steps: Sequence[int] | None = None,
    dtype: Any = np.float32,
    device: str | Device | None = None,
    progress: Any = False,
    **kwargs: Any,
) -> np.ndarray | tuple[np.ndarray, Trajectory]:
    """Generate samples of `shape` (N, ...) with `sampler`: an object from `make_sampler`, or
    a name of `SAMPLERS` with its options among `kwargs` (e.g. eta=0.5 for "ddim",
    solver_order=3 for "dpmsolver++"; the other kwargs go to the model, e.g. class_labels).
    x_T defaults to N(0, I) (variance preserving, for every sampler) drawn from `generator`
    (or default_rng(seed)).

    Classifier guidance (Dhariwal & Nichol): `classifier_grad_fn(x_t, t)` returns
    grad_x log p(y | x_t, t) (N, ...) for the wanted labels; DDPM shifts its mean by
    classifier_scale * Sigma * grad, every other sampler its eps by
    -sigma_t * classifier_scale * grad. Scale 0 never calls it.

    `trajectory_steps` are model-call indices 0..K-1 to record (default: all) when
    `return_trajectory`; then returns (x0, Trajectory). See `model_prediction` for
    guidance_scale / null_cond. `progress`: True for a tqdm bar over model calls, or a bar
    of the caller's to update. The loop runs on `device` (default: `model_device(model)`);
    results are NumPy arrays.
    """
    options = {k: v for k, v in kwargs.items() if k in SAMPLER_OPTION_NAMES}
    cond = {k: v for k, v in kwargs.items() if k not in SAMPLER_OPTION_NAMES}
    runner = resolve_sampler(sampler, schedule, num_inference_steps, options)
    runner.reset()
    guided_by_classifier = classifier_grad_fn is not None and classifier_scale != 0
    if generator is None and seed is not None:
        generator = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    device = model_device(model) if device is None else Device(device)
    if x_T is None:
        x = to_device(draw_noise(generator, np.empty(shape, dtype=dtype)), device)
    else:
        if shape_of(x_T) != shape:
            raise ValueError(f"x_T has shape {shape_of(x_T)}, expected {shape}")
        x = to_device(array_of(x_T, dtype), device).copy()

    num_calls = runner.model_calls
    recorded = set(range(num_calls) if trajectory_steps is None else trajectory_steps)
    if not recorded <= set(range(num_calls)):
        raise ValueError(f"trajectory_steps must be loop indices in [0, {num_calls})")
    bar, owned = _progress_bar(progress, num_calls)
    times, samples, originals = [], [], []
    try:
        for index in range(num_calls):
            t = runner.timestep(index)
            output = model_prediction(model, x, t, cond, guidance_scale, null_cond,
                                      runner.variance_type)
            gradient = None
            if guided_by_classifier:
                gradient = _classifier_gradient(classifier_grad_fn, x,
                                                timestep_batch(t, x.shape[0]), classifier_scale)
            result = runner.step(output, t, x, generator, gradient)
            x = result.prev_sample
            if return_trajectory and index in recorded:
                times.append(t)
                samples.append(x)
                originals.append(result.pred_original_sample)
            if bar is not None:
                bar.update(1)
    finally:
        if owned:
            bar.close()
    x = to_device(x, CPU)
    if not return_trajectory:
        return x
    xp = get_array_module(*samples) if samples else np
    trajectory = Trajectory(
        timesteps=np.asarray(times, dtype=runner.timesteps.dtype),
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
    return cast(float(scale), x) * gradient.astype(x.dtype, copy=False)


def ddim_invert(
    model: Callable[..., Any],
    schedule: NoiseSchedule,
    x0: np.ndarray,
    num_inference_steps: int = DEFAULT_STEPS,
    timestep_spacing: TimestepSpacing | str = TimestepSpacing.LEADING,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
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
    runner = DDIMSampler(schedule, num_inference_steps, timestep_spacing, eta=0.0,
                         prediction_type=prediction_type, clip_sample=False)
    device = model_device(model) if device is None else Device(device)
    x = to_device(array_of(x0), device).copy()
    for t in runner.timesteps[::-1]:
        alphas_cumprod_t, alphas_cumprod_prev = runner.alphas_cumprod_at(int(t))
        x_prev, estimate = x, x
        for _ in range(num_fixed_point_iterations + 1):
            output = model_prediction(model, estimate, int(t), cond, guidance_scale, null_cond)
            _, eps = runner.predict_original(output, int(t), estimate)
            # x0 implied by (x_prev, eps), then pushed forward to x_t with the same eps.
            x0_hat = (x_prev - cast(math.sqrt(1.0 - alphas_cumprod_prev), x) * eps) / cast(
                math.sqrt(alphas_cumprod_prev), x
            )
            estimate = (
                cast(math.sqrt(alphas_cumprod_t), x) * x0_hat
                + cast(math.sqrt(1.0 - alphas_cumprod_t), x) * eps
            )
        x = estimate
    return to_device(x, CPU)
