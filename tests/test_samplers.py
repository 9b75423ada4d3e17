"""Tests for tinydiff.samplers: timesteps, DDPM / DDIM steps, guidance and inversion."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinydiff.diffusion import prediction_target, q_posterior, q_sample
from tinydiff.options import PredictionType, TimestepSpacing
from tinydiff.samplers import (
    DDIMSampler,
    DDPMSampler,
    ddim_invert,
    inference_timesteps,
    model_prediction,
    sample,
)
from tinydiff.schedules import NoiseSchedule

REFERENCE = np.load(Path(__file__).parent / "reference" / "diffusers_schedules.npz")


def linear_eps_model(x, t):
    """The stand-in model of the diffusers DDIM reference: eps(x, t) = 0.5 x + 0.001 t."""
    return 0.5 * x + 0.001 * t.reshape((-1,) + (1,) * (x.ndim - 1))


def constant_output_model(output):
    """A model that returns a fixed array (e.g. the true noise) whatever its inputs."""
    return lambda x, t: output


# ----------------------------------------------------------------------------- timesteps


@pytest.mark.parametrize("spacing", TimestepSpacing.values())
@pytest.mark.parametrize("steps", [7, 10, 50])
def test_timesteps_match_diffusers(spacing: str, steps: int) -> None:
    expected = REFERENCE[f"timesteps/{spacing}_{steps}"]
    np.testing.assert_array_equal(inference_timesteps(1000, steps, spacing), expected)


@given(
    num_train_timesteps=st.integers(1, 3000),
    fraction=st.floats(0, 1),
    spacing=st.sampled_from(TimestepSpacing.values()),
)
def test_any_number_of_steps_works(num_train_timesteps: int, fraction: float, spacing: str) -> None:
    steps = max(1, round(fraction * num_train_timesteps))
    timesteps = inference_timesteps(num_train_timesteps, steps, spacing)
    assert timesteps.shape == (steps,) and timesteps.dtype == np.int64
    assert np.all(np.diff(timesteps) < 0)
    assert 0 <= timesteps[-1] and timesteps[0] < num_train_timesteps


@pytest.mark.parametrize("steps", [0, 1001, -3, 2.5, True])
def test_invalid_number_of_steps(steps) -> None:
    with pytest.raises(ValueError, match=r"num_inference_steps must be an int in \[1, 1000\]"):
        inference_timesteps(1000, steps)


def test_previous_timestep_comes_from_the_array() -> None:
    sampler = DDIMSampler(NoiseSchedule(1000), 7, "trailing")
    timesteps = list(sampler.timesteps)  # [999, 856, 713, 570, 428, 285, 142]: uneven gaps
    for current, following in zip(timesteps, timesteps[1:] + [-1]):
        assert sampler.previous_timestep(current) == following
    assert sampler.alphas_cumprod_at(142)[1] == 1.0
    with pytest.raises(ValueError, match="not in this sampler"):
        sampler.previous_timestep(500)


# ----------------------------------------------------------------------------- DDIM reference


def test_ddim_matches_diffusers_trajectory() -> None:
    x_T = REFERENCE["ddim_leading_20/x_T"]
    x0, trajectory = sample(
        linear_eps_model,
        NoiseSchedule(1000),
        x_T.shape,
        "ddim",
        20,
        x_T=x_T,
        clip_sample=False,
        dtype=np.float64,
        return_trajectory=True,
    )
    np.testing.assert_array_equal(trajectory.timesteps, REFERENCE["ddim_leading_20/timesteps"])
    # diffusers ran in float32: ~3e-7 relative on values up to ~40.
    np.testing.assert_allclose(
        trajectory.samples, REFERENCE["ddim_leading_20/trajectory"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(trajectory.samples[-1], x0)


# ----------------------------------------------------------------------------- single steps


def oracle_setup(prediction_type: str, t: int, schedule: NoiseSchedule, seed: int = 0):
    """x0, noise, x_t and the model output that predicts them exactly at t."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, (5, 3))
    noise = rng.standard_normal(x0.shape)
    t_batch = np.full(5, t)
    x_t = q_sample(schedule, x0, t_batch, noise)
    return x0, noise, x_t, prediction_target(schedule, x0, noise, t_batch, prediction_type)


@pytest.mark.parametrize("prediction_type", PredictionType.values())
@pytest.mark.parametrize("spacing", TimestepSpacing.values())
def test_oracle_ddim_step_lands_on_the_forward_process(prediction_type: str, spacing: str) -> None:
    schedule = NoiseSchedule(100, beta_schedule="squaredcos_cap_v2")
    sampler = DDIMSampler(schedule, 7, spacing, prediction_type=prediction_type, clip_sample=False)
    for t in sampler.timesteps[:-1]:
        x0, noise, x_t, output = oracle_setup(prediction_type, int(t), schedule)
        result = sampler.step(output, int(t), x_t)
        prev = np.full(5, sampler.previous_timestep(int(t)))
        np.testing.assert_allclose(result.pred_original_sample, x0, atol=1e-10)
        np.testing.assert_allclose(
            result.prev_sample, q_sample(schedule, x0, prev, noise), atol=1e-10
        )


def respaced_posterior(schedule, x0, x_t, t, prev):
    """Mean and variance of q(x_prev | x_t, x0) by Bayes' rule, for any prev < t."""
    alpha_bar, alpha_bar_prev = schedule.alphas_cumprod[t], schedule.alphas_cumprod[prev]
    prior_mean, prior_var = math.sqrt(alpha_bar_prev) * x0, 1 - alpha_bar_prev
    alpha, beta = alpha_bar / alpha_bar_prev, 1 - alpha_bar / alpha_bar_prev  # x_t | x_prev
    precision = 1 / prior_var + alpha / beta
    return (prior_mean / prior_var + math.sqrt(alpha) * x_t / beta) / precision, 1 / precision, beta


@pytest.mark.parametrize("prediction_type", PredictionType.values())
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("num_inference_steps", [None, 7])
def test_oracle_ddpm_step_samples_the_posterior(
    prediction_type: str, variance_type: str, num_inference_steps: int | None
) -> None:
    schedule = NoiseSchedule(50)
    sampler = DDPMSampler(
        schedule,
        num_inference_steps,
        variance_type=variance_type,
        prediction_type=prediction_type,
        clip_sample=False,
    )
    for t in (int(sampler.timesteps[0]), int(sampler.timesteps[-2]), 0):
        x0, _, x_t, output = oracle_setup(prediction_type, t, schedule)
        result = sampler.step(output, t, x_t, np.random.default_rng(t))
        np.testing.assert_allclose(result.pred_original_sample, x0, atol=1e-10)
        if t == 0:
            np.testing.assert_allclose(result.prev_sample, x0, atol=1e-10)
            continue
        prev = sampler.previous_timestep(t)
        mean, posterior_variance, beta = respaced_posterior(schedule, x0, x_t, t, prev)
        if num_inference_steps is None:  # the same as the schedule's posterior
            np.testing.assert_allclose(q_posterior(schedule, x0, x_t, np.full(5, t))[0], mean)
        variance = posterior_variance if variance_type == "fixed_small" else beta
        z = np.random.default_rng(t).standard_normal(x0.shape)
        np.testing.assert_allclose(result.prev_sample, mean + np.sqrt(variance) * z, atol=1e-10)


def test_clipping() -> None:
    schedule = NoiseSchedule(50)
    x_t = np.full((2, 3), 0.5)
    output = np.full((2, 3), 4.0)  # "sample" prediction outside [-1, 1]
    for sampler in (
        DDPMSampler(schedule, prediction_type="sample", clip_sample_range=0.5),
        DDIMSampler(schedule, 10, prediction_type="sample", clip_sample_range=0.5),
    ):
        result = sampler.step(output, int(sampler.timesteps[-1]), x_t)
        assert np.all(result.pred_original_sample == 0.5)
        np.testing.assert_allclose(result.prev_sample, 0.5)  # last step returns x0
    unclipped = DDIMSampler(schedule, 10, prediction_type="sample", clip_sample=False)
    assert np.all(unclipped.step(output, 0, x_t).pred_original_sample == 4.0)


# ----------------------------------------------------------------------------- loops


def tanh_model(x, t):
    return np.tanh(2 * x) + 0.01 * t.reshape(-1, *(1,) * (x.ndim - 1))


@pytest.mark.parametrize("clip_sample", [True, False])
def test_ddim_eta_one_equals_ddpm_fixed_small(clip_sample: bool) -> None:
    schedule = NoiseSchedule(30, beta_schedule="squaredcos_cap_v2")
    common = {"clip_sample": clip_sample, "dtype": np.float64, "return_trajectory": True}
    ddpm, ddpm_path = sample(tanh_model, schedule, (4, 3), "ddpm", seed=7, **common)
    ddim, ddim_path = sample(tanh_model, schedule, (4, 3), "ddim", 30, seed=7, eta=1.0, **common)
    np.testing.assert_allclose(ddim_path.samples, ddpm_path.samples, rtol=1e-10, atol=1e-12)
    assert abs(ddpm).max() > 0.1


def gaussian_data_oracle(schedule: NoiseSchedule, mean: float, std: float):
    """Exact eps model for data N(mean, std^2): E[x0 | x_t] is linear in x_t."""

    def model(x_t, t):
        a = schedule.alphas_cumprod[t].reshape(-1, *(1,) * (x_t.ndim - 1))
        x0 = mean + np.sqrt(a) * std**2 * (x_t - np.sqrt(a) * mean) / (a * std**2 + 1 - a)
        return (x_t - np.sqrt(a) * x0) / np.sqrt(1 - a)

    return model


@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        ("ddpm", {"variance_type": "fixed_small"}),
        ("ddpm", {"variance_type": "fixed_large"}),
        ("ddim", {"num_inference_steps": 1000}),
        ("ddim", {"num_inference_steps": 1000, "eta": 0.5, "timestep_spacing": "trailing"}),
    ],
)
def test_samples_of_gaussian_oracle_have_the_data_statistics(sampler: str, options: dict) -> None:
    schedule = NoiseSchedule(1000)
    mean, std, n = 0.1, 0.25, 4000
    samples = sample(
        gaussian_data_oracle(schedule, mean, std),
        schedule,
        (n, 1),
        sampler,
        generator=np.random.default_rng(3),
        clip_sample=False,
        dtype=np.float64,
        **options,
    ).ravel()
    # Standard errors of the sample mean and standard deviation of n Gaussian draws. (The
    # 1000-step chains are biased by < 1% of std, well inside these bounds.)
    assert abs(samples.mean() - mean) < 4 * std / math.sqrt(n)
    assert abs(samples.std() - std) < 4 * std / math.sqrt(2 * n)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("prediction_type", PredictionType.values())
def test_float32_is_kept(sampler: str, prediction_type: str) -> None:
    schedule = NoiseSchedule(20)

    def float64_model(x, t):
        assert x.dtype == np.float32 and t.dtype == np.int64
        return np.tanh(x).astype(np.float64)

    x, trajectory = sample(
        float64_model,
        schedule,
        (2, 3),
        sampler,
        10,
        seed=0,
        prediction_type=prediction_type,
        return_trajectory=True,
        **({"eta": 0.3} if sampler == "ddim" else {}),
    )
    assert x.dtype == np.float32
    assert trajectory.samples.dtype == trajectory.pred_original_samples.dtype == np.float32


def test_determinism_and_no_global_random_state() -> None:
    schedule = NoiseSchedule(20)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    first = sample(tanh_model, schedule, (3, 2), "ddpm", generator=np.random.default_rng(1))
    second = sample(tanh_model, schedule, (3, 2), "ddpm", seed=1)
    other = sample(tanh_model, schedule, (3, 2), "ddpm", seed=2)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_trajectory_subset() -> None:
    schedule = NoiseSchedule(100)
    x, trajectory = sample(
        tanh_model,
        schedule,
        (2, 4),
        "ddim",
        10,
        seed=0,
        return_trajectory=True,
        trajectory_steps=[0, 4, 9],
    )
    np.testing.assert_array_equal(trajectory.timesteps, [90, 50, 0])
    assert trajectory.samples.shape == trajectory.pred_original_samples.shape == (3, 2, 4)
    np.testing.assert_array_equal(trajectory.samples[-1], x)
    with pytest.raises(ValueError, match="trajectory_steps"):
        sample(
            tanh_model,
            schedule,
            (2, 4),
            "ddim",
            10,
            seed=0,
            return_trajectory=True,
            trajectory_steps=[10],
        )


def test_tensor_like_model_output_is_converted() -> None:
    class TensorLike:
        def __init__(self, data):
            self.data = data

        def __array__(self, dtype=None, copy=None):
            return self.data

    x = sample(lambda x, t: TensorLike(0.1 * x), NoiseSchedule(10), (2, 2), "ddpm", seed=0)
    assert isinstance(x, np.ndarray) and x.shape == (2, 2)


# ----------------------------------------------------------------------------- guidance


def class_model(calls):
    def model(x, t, class_labels):
        calls.append(len(x))
        return 0.1 * x + class_labels.reshape(-1, *(1,) * (x.ndim - 1)).astype(x.dtype)

    return model


def test_guidance_is_one_batched_call_with_the_diffusers_formula() -> None:
    calls = []
    x_t = np.ones((3, 2), dtype=np.float32)
    labels, null = np.array([1, 2, 3]), {"class_labels": 10}
    cond = {"class_labels": labels}
    guided = model_prediction(class_model(calls), x_t, 5, cond, 3.0, null)
    assert calls == [6]
    conditional, unconditional = 0.1 + labels[:, None], 0.1 + 10.0
    expected = unconditional + 3.0 * (conditional - unconditional)
    np.testing.assert_allclose(guided, np.broadcast_to(expected, (3, 2)), rtol=1e-6)
    assert guided.dtype == np.float32
    np.testing.assert_allclose(
        model_prediction(class_model([]), x_t, 5, cond, 1.0, null),
        np.broadcast_to(conditional, (3, 2)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        model_prediction(class_model([]), x_t, 5, cond, 0.0, null),
        np.full((3, 2), unconditional),
        rtol=1e-6,
    )


def test_guidance_in_any_prediction_type_equals_guiding_eps() -> None:
    schedule = NoiseSchedule(50)
    t, x_t = 30, np.random.default_rng(0).standard_normal((3, 2))
    labels, null = np.array([1, 2, 3]), {"class_labels": np.zeros(3, dtype=int)}

    def eps_model(x, t, class_labels):
        return np.sin(x) * (1 + class_labels[:, None])

    def v_model(x, t, class_labels):  # the same model, reporting v instead of eps
        x0 = DDIMSampler(schedule, 50, clip_sample=False).predict_original(
            eps_model(x, t, class_labels), int(t[0]), x
        )[0]
        return prediction_target(schedule, x0, eps_model(x, t, class_labels), t, "v_prediction")

    runs = {}
    for name, model in (("epsilon", eps_model), ("v_prediction", v_model)):
        sampler = DDIMSampler(schedule, 50, prediction_type=name, clip_sample=False)
        output = model_prediction(model, x_t, t, {"class_labels": labels}, 4.0, null)
        runs[name] = sampler.step(output, t, x_t).prev_sample
    np.testing.assert_allclose(runs["v_prediction"], runs["epsilon"], rtol=1e-10, atol=1e-12)


def test_sample_with_guidance() -> None:
    calls = []
    x = sample(
        class_model(calls),
        NoiseSchedule(20),
        (3, 2),
        "ddim",
        5,
        seed=0,
        guidance_scale=2.0,
        null_cond={"class_labels": 0},
        class_labels=np.array([1, 2, 3]),
    )
    assert calls == [6] * 5 and x.shape == (3, 2)
    with pytest.raises(ValueError, match="null_cond"):
        sample(
            class_model([]),
            NoiseSchedule(20),
            (3, 2),
            "ddim",
            5,
            seed=0,
            guidance_scale=2.0,
            class_labels=np.array([1, 2, 3]),
        )


# ----------------------------------------------------------------------------- inversion


def test_ddim_inversion_with_noise_oracle_is_exact() -> None:
    schedule = NoiseSchedule(1000)
    x0, noise, _, _ = oracle_setup("epsilon", 0, schedule)
    x_T = ddim_invert(constant_output_model(noise), schedule, x0, 25, "trailing")
    np.testing.assert_allclose(x_T, q_sample(schedule, x0, np.full(5, 999), noise), atol=1e-12)


@pytest.mark.parametrize("prediction_type", PredictionType.values())
def test_ddim_inversion_round_trips(prediction_type: str) -> None:
    schedule = NoiseSchedule(1000)
    x_T = np.random.default_rng(0).standard_normal((4, 1, 3))

    def model(x, t):  # a linear eps model, reported as `prediction_type`
        eps = linear_eps_model(x, t)
        x0 = DDIMSampler(schedule, 1000, clip_sample=False).predict_original(eps, int(t[0]), x)[0]
        return prediction_target(schedule, x0, eps, t, prediction_type)

    common = {"prediction_type": prediction_type}
    x0 = sample(
        model,
        schedule,
        x_T.shape,
        "ddim",
        20,
        x_T=x_T,
        clip_sample=False,
        dtype=np.float64,
        **common,
    )
    exact = ddim_invert(model, schedule, x0, 20, num_fixed_point_iterations=60, **common)
    np.testing.assert_allclose(exact, x_T, rtol=1e-10, atol=1e-10)
    approximate = ddim_invert(model, schedule, x0, 20, **common)
    assert np.abs(approximate - x_T).max() > 1e-3  # without iterations it is only approximate


# ----------------------------------------------------------------------------- errors


def test_clear_errors() -> None:
    schedule = NoiseSchedule(20)
    with pytest.raises(ValueError, match="sampler"):
        sample(tanh_model, schedule, (2, 2), "euler_a", seed=0)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(schedule, 10, eta=1.5)
    with pytest.raises(ValueError, match="variance_type"):
        DDPMSampler(schedule, variance_type="learned")
    with pytest.raises(ValueError, match="prediction_type"):
        DDIMSampler(schedule, 10, prediction_type="x0")
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDIMSampler(schedule, 10, "uniform")
    with pytest.raises(ValueError, match="clip_sample_range"):
        DDPMSampler(schedule, clip_sample_range=0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample(tanh_model, schedule, (2, 2), "ddim", 0, seed=0)
    with pytest.raises(ValueError, match="x_T has shape"):
        sample(tanh_model, schedule, (2, 2), x_T=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Generator"):
        sample(tanh_model, schedule, (2, 2))
    with pytest.raises(ValueError, match="Generator"):
        sample(tanh_model, schedule, (2, 2), "ddpm", x_T=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="model output has shape"):
        sample(lambda x, t: x[:, :1], schedule, (2, 2), seed=0)
    with pytest.raises(ValueError, match="num_fixed_point_iterations"):
        ddim_invert(tanh_model, schedule, np.zeros((2, 2)), 5, num_fixed_point_iterations=-1)


def test_epsilon_prediction_at_zero_terminal_snr_is_refused_clearly():
    schedule = NoiseSchedule(num_train_timesteps=20, rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="v_prediction"):
        DDIMSampler(schedule, num_inference_steps=5, timestep_spacing="trailing")
    sampler = DDIMSampler(schedule, num_inference_steps=5, timestep_spacing="trailing",
                          prediction_type="v_prediction")
    x = np.ones((2, 3))
    step = sampler.step(np.zeros_like(x), int(sampler.timesteps[0]), x)
    assert np.all(np.isfinite(step.prev_sample))


def test_class_guidance_arguments_and_their_shortcuts():
    from types import SimpleNamespace

    from tinydiff.samplers import DEFAULT_GUIDANCE, class_guidance, model_prediction

    conditional = SimpleNamespace(config=SimpleNamespace(num_classes=10))
    labels = np.array([3, 7])
    assert class_guidance(SimpleNamespace(config=SimpleNamespace(num_classes=None)),
                          labels) == {}
    assert class_guidance(conditional, None) == {}
    guided = class_guidance(conditional, labels)
    assert guided["guidance_scale"] == DEFAULT_GUIDANCE
    assert guided["null_cond"] == {"class_labels": 10}

    def model(x, t, class_labels):  # a toy "UNet" whose output depends on the label
        return x * (1 + np.asarray(class_labels, dtype=x.dtype)[:, None])

    x = np.ones((2, 3))
    for scale in (0.0, 1.0, 2.5):
        shortcut = class_guidance(conditional, labels, scale)
        cond = {"class_labels": shortcut.pop("class_labels")}
        got = model_prediction(model, x, 5, cond, **shortcut)
        full = model_prediction(model, x, 5, {"class_labels": labels}, guidance_scale=scale,
                                null_cond={"class_labels": 10})
        np.testing.assert_allclose(got, full, rtol=1e-12)
