"""DPM-Solver++, Euler, Heun and UniPC: diffusers' trajectories, exactness on Gaussian data,
the make_sampler API and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydiff.diffusion import prediction_target
from tinydiff.models import timestep_embedding
from tinydiff.options import PredictionType
from tinydiff.samplers import (
    SAMPLERS,
    DDIMSampler,
    make_sampler,
    model_calls_per_sample,
    sample,
    sigma_to_t,
)
from tinydiff.schedules import NoiseSchedule

REFERENCE_DIR = Path(__file__).parent / "reference"
REFERENCE = np.load(REFERENCE_DIR / "diffusers_samplers.npz")
CASES = {  # case: (sampler, schedule options, steps, sampler options), as in the .json
    "dpmpp_2m": ("dpmsolver++", {}, 10, {}),
    "dpmpp_2m_karras": ("dpmsolver++", {}, 20, {"use_karras_sigmas": True}),
    "dpmpp_3m_cosine_v": ("dpmsolver++", {"beta_schedule": "squaredcos_cap_v2"}, 20,
                          {"solver_order": 3, "prediction_type": "v_prediction"}),
    "dpmpp_2m_trailing": ("dpmsolver++", {}, 10, {"timestep_spacing": "trailing"}),
    "euler": ("euler", {}, 20, {}),
    "euler_karras": ("euler", {}, 10, {"use_karras_sigmas": True}),
    "heun": ("heun", {}, 10, {}),
    "unipc_bh2": ("unipc", {}, 10, {"solver_type": "bh2"}),
}
SIGMA_SPACE = ("euler", "heun")


def stand_in(x, t):
    """The reference's model: 0.5 * scale_model_input(x, t) + 0.001 t (x_t is variance
    preserving here, which is what scale_model_input gives the model in diffusers)."""
    return 0.5 * x + 0.001 * t.reshape(-1, *(1,) * (x.ndim - 1))


def test_the_cases_are_those_of_the_reference_calls():
    calls = json.loads((REFERENCE_DIR / "diffusers_samplers.json").read_text())
    assert set(calls) == set(CASES)
    index = json.loads((REFERENCE_DIR / "index.json").read_text())
    assert index["diffusers_samplers.npz"] == calls


@pytest.mark.parametrize("case", CASES)
def test_matches_diffusers(case):
    name, schedule_options, steps, options = CASES[case]
    schedule = NoiseSchedule(1000, **schedule_options)
    sampler = make_sampler(name, schedule, steps, **options)
    sigmas, trajectory = REFERENCE[f"{case}/sigmas"], REFERENCE[f"{case}/trajectory"]
    # timesteps: equal (Euler's Karras timesteps come from float32 sigmas there: 3e-5)
    np.testing.assert_allclose(sampler.timesteps, REFERENCE[f"{case}/timesteps"], rtol=0,
                               atol=5e-5 if sampler.use_karras_sigmas and name == "euler" else 0)
    # diffusers rounds its sigmas to float32
    np.testing.assert_allclose(sampler.sigmas, sigmas, rtol=1e-7, atol=0)
    x_T = REFERENCE[f"{case}/x_T"]
    start = x_T / np.sqrt(sigmas[0] ** 2 + 1) if name in SIGMA_SPACE else x_T
    x, path = sample(stand_in, schedule, x_T.shape, sampler, x_T=start, dtype=np.float64,
                     return_trajectory=True)
    samples = path.samples
    if name in SIGMA_SPACE:  # diffusers' variable: x_t sqrt(sigma^2 + 1) after each step
        samples = samples * np.sqrt(sigmas[1:] ** 2 + 1).reshape(-1, 1, 1, 1, 1)
    scale = np.abs(trajectory).max()
    assert len(samples) == len(trajectory) == sampler.model_calls
    # measured: at most 4.1e-7 of the largest value (float32 sigmas in diffusers)
    np.testing.assert_allclose(samples, trajectory, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(x, trajectory[-1], rtol=0, atol=1e-6 * np.abs(x).max())


def test_timestep_embedding_takes_fractional_timesteps():
    t = np.array([946.42108154, 946.0, 0.5])
    features = timestep_embedding(t, 8, dtype=np.float64)
    assert np.all(np.isfinite(features))
    assert not np.allclose(features[0], features[1])
    np.testing.assert_allclose(timestep_embedding(np.array([7.0]), 8),
                               timestep_embedding(np.array([7]), 8))


def test_sigma_to_t_inverts_the_schedule():
    schedule = NoiseSchedule(1000)
    sigmas = np.sqrt((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod)
    np.testing.assert_allclose(sigma_to_t(sigmas[[0, 10, 500, 999]], np.log(sigmas)),
                               [0, 10, 500, 999], atol=1e-9)


# ----------------------------------------------------------------------------- exactness


def gaussian_data_oracle(schedule: NoiseSchedule, mean: float, std: float, prediction_type):
    """A model whose prediction is exact for data N(mean, std^2), at any (fractional) t:
    E[x0 | x_t] is linear in x_t, with alpha_bar interpolated as the sigma samplers do."""
    sigmas = np.sqrt((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod)

    def model(x_t, t):
        sigma = np.interp(t, np.arange(len(sigmas)), sigmas).reshape(-1, *(1,) * (x_t.ndim - 1))
        a = 1 / (sigma**2 + 1)
        x0 = mean + np.sqrt(a) * std**2 * (x_t - np.sqrt(a) * mean) / (a * std**2 + 1 - a)
        eps = (x_t - np.sqrt(a) * x0) / np.sqrt(1 - a)
        alpha, sigma_t = np.sqrt(a), np.sqrt(1 - a)
        return {"epsilon": eps, "sample": x0,
                "v_prediction": alpha * eps - sigma_t * x0}[prediction_type]

    return model


def exact_flow(schedule, x_T, mean, std):
    """The probability-flow ODE's exact end point for Gaussian data from x_T at t = T - 1:
    x0 = mean + std (x_T - alpha_T mean) / sqrt(alpha_T^2 std^2 + sigma_T^2)."""
    a = schedule.alphas_cumprod[-1]
    return mean + std * (x_T - np.sqrt(a) * mean) / np.sqrt(a * std**2 + 1 - a)


SOLVERS = [("dpmsolver++", {"solver_order": 1}, 1), ("dpmsolver++", {"solver_order": 2}, 2),
           ("dpmsolver++", {"solver_order": 3}, 2), ("unipc", {"solver_order": 2}, 2),
           ("unipc", {"solver_order": 3, "solver_type": "bh1"}, 2), ("euler", {}, 1),
           ("heun", {}, 2)]


@pytest.mark.parametrize(("name", "options", "order"), SOLVERS)
def test_solvers_converge_on_gaussian_data_at_their_order(name, options, order):
    schedule = NoiseSchedule(1000)
    mean, std = 0.3, 0.5
    x_T = np.random.default_rng(0).standard_normal((64, 1))
    exact = exact_flow(schedule, x_T, mean, std)
    extra = {"lower_order_final": False} if name in ("dpmsolver++", "unipc") else {}
    errors = []
    for steps in (10, 20, 40):
        x = sample(gaussian_data_oracle(schedule, mean, std, "epsilon"), schedule, x_T.shape,
                   name, steps, x_T=x_T, dtype=np.float64, **options, **extra)
        errors.append(np.abs(x - exact).max())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    if order == 1:  # each doubling of the steps halves the error
        assert np.all((rates > 0.8) & (rates < 1.2)), (errors, rates)
    else:  # measured 1.4-2.9 per doubling from 10 to 40 steps (the 1000-step schedule's
        # discrete betas and the last step to sigma 0 keep the higher orders below 2^order)
        assert np.mean(rates) > 1.3 and errors[-1] < 0.03, (errors, rates)


@given(steps=st.integers(2, 30), prediction_type=st.sampled_from(PredictionType.values()),
       spacing=st.sampled_from(["leading", "trailing", "linspace"]))
@settings(max_examples=15)
def test_dpm_solver_order_one_is_ddim(steps, prediction_type, spacing):
    schedule = NoiseSchedule(100, beta_schedule="squaredcos_cap_v2")
    x_T = np.random.default_rng(steps).standard_normal((3, 2))

    def model(x, t):
        eps = np.tanh(x) + 0.01 * t[:, None]
        x0 = DDIMSampler(schedule, 100, clip_sample=False).predict_original(eps, int(t[0]), x)[0]
        return prediction_target(schedule, x0, eps, t, prediction_type)

    dpm = make_sampler("dpmsolver++", schedule, steps, solver_order=1,
                       prediction_type=prediction_type, timestep_spacing=spacing)
    ddim = DDIMSampler(schedule, steps, clip_sample=False, prediction_type=prediction_type)
    ddim.timesteps = dpm.timesteps  # the same timesteps (DPM's spacing), then clean
    ddim._prev_of = dict(zip(dpm.timesteps.tolist(), dpm.timesteps[1:].tolist() + [-1]))
    common = {"x_T": x_T, "dtype": np.float64}
    np.testing.assert_allclose(sample(model, schedule, x_T.shape, dpm, **common),
                               sample(model, schedule, x_T.shape, ddim, **common),
                               rtol=1e-9, atol=1e-10)


@given(name=st.sampled_from(SAMPLERS), steps=st.integers(1, 12))
@settings(max_examples=20)
def test_model_calls_are_what_the_table_says(name, steps):
    calls = []

    def model(x, t):
        calls.append(t[0])
        return 0.1 * x

    sampler = make_sampler(name, NoiseSchedule(50), steps)
    sample(model, NoiseSchedule(50), (2, 1), sampler, seed=0)
    assert len(calls) == sampler.model_calls == model_calls_per_sample(name, steps)
    sample(model, NoiseSchedule(50), (2, 1), sampler, seed=0)  # reusable: reset per run
    assert len(calls) == 2 * sampler.model_calls


@pytest.mark.parametrize("name", ["dpmsolver++", "unipc", "euler", "heun"])
@pytest.mark.parametrize("prediction_type", PredictionType.values())
def test_every_prediction_type_gives_the_same_samples(name, prediction_type):
    schedule = NoiseSchedule(1000)
    x_T = np.random.default_rng(1).standard_normal((4, 1))
    runs = [sample(gaussian_data_oracle(schedule, 0.2, 0.4, kind), schedule, x_T.shape, name,
                   8, x_T=x_T, dtype=np.float64, prediction_type=kind)
            for kind in ("epsilon", prediction_type)]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-8, atol=1e-8)


def test_guidance_trajectory_float32_and_classifier_guidance():
    calls = []

    def model(x, t, class_labels):
        calls.append(len(x))
        return 0.1 * x + 0.01 * class_labels[:, None].astype(x.dtype)

    for name in ("dpmsolver++", "unipc", "euler", "heun"):
        calls.clear()
        x, path = sample(model, NoiseSchedule(100), (3, 2), name, 4, seed=0,
                         guidance_scale=2.0, null_cond={"class_labels": 0},
                         class_labels=np.array([1, 2, 3]), return_trajectory=True)
        assert x.dtype == path.samples.dtype == np.float32
        assert calls == [6] * model_calls_per_sample(name, 4)
        np.testing.assert_array_equal(path.samples[-1], x)
        pulled = sample(lambda x, t: 0.1 * x, NoiseSchedule(100), (3, 2), name, 4, seed=0,
                        classifier_grad_fn=lambda x, t: np.ones_like(x), classifier_scale=3.0)
        plain = sample(lambda x, t: 0.1 * x, NoiseSchedule(100), (3, 2), name, 4, seed=0)
        assert np.all(pulled > plain)


def test_thresholding_keeps_x0_in_range():
    sampler = make_sampler("dpmsolver++", NoiseSchedule(100), 5, thresholding=True,
                           prediction_type="sample", sample_max_value=1.0)
    x0 = sampler.step(np.full((2, 3), 4.0), sampler.timestep(0), np.ones((2, 3))
                      ).pred_original_sample
    np.testing.assert_allclose(x0, 1.0)


# ----------------------------------------------------------------------------- errors


def test_clear_errors():
    schedule = NoiseSchedule(20)
    with pytest.raises(ValueError, match=r"unknown sampler 'dpm'.*dpmsolver\+\+"):
        make_sampler("dpm", schedule)
    with pytest.raises(ValueError, match=r"'dpmsolver\+\+' has no option 'eta'.*solver_order"):
        make_sampler("dpmsolver++", schedule, eta=0.5)
    with pytest.raises(ValueError, match="'euler' has no option 'solver_order'"):
        sample(lambda x, t: x, schedule, (2, 1), "euler", seed=0, solver_order=2)
    with pytest.raises(ValueError, match="solver_order must be 1, 2 or 3"):
        make_sampler("unipc", schedule, 5, solver_order=4)
    with pytest.raises(ValueError, match=r"num_inference_steps must be an int in \[1, 20\]"):
        make_sampler("euler", schedule, 21)
    with pytest.raises(ValueError, match="solver_type"):
        make_sampler("unipc", schedule, 5, solver_type="bh3")
    with pytest.raises(ValueError, match="use_karras_sigmas.*zero terminal SNR"):
        make_sampler("dpmsolver++", NoiseSchedule(20, rescale_betas_zero_snr=True), 5,
                     use_karras_sigmas=True)
    with pytest.raises(ValueError, match="set when the sampler is built"):
        sample(lambda x, t: x, schedule, (2, 1), make_sampler("euler", schedule, 5), seed=0,
               use_karras_sigmas=True)
    with pytest.raises(ValueError, match="repeats timesteps"):
        make_sampler("dpmsolver++", schedule, 20, timestep_spacing="leading")
