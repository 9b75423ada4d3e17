"""Tests for tinydiff.schedules and the schedule plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinydiff.options import BetaSchedule
from tinydiff.plots import plot_schedules
from tinydiff.schedules import NoiseSchedule, rescale_zero_terminal_snr

REFERENCE = np.load(Path(__file__).parent / "reference" / "diffusers_schedules.npz")

# The configurations in tests/reference/index.json.
REFERENCE_CASES = {
    "linear": {},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "sigmoid_T500": {"beta_schedule": "sigmoid", "num_train_timesteps": 500},
    "linear_zero_snr": {"rescale_betas_zero_snr": True},
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_matches_diffusers_reference(case: str) -> None:
    schedule = NoiseSchedule(**REFERENCE_CASES[case])
    # diffusers works in float32: betas agree to float32 rounding, alphas_cumprod to the rounding
    # a float32 cumprod accumulates (~3e-7 absolute). The zero-SNR rescale divides nearly equal
    # float32 numbers, so its betas only agree to ~2e-6 absolute.
    beta_atol = 5e-6 if case == "linear_zero_snr" else 1e-12
    np.testing.assert_allclose(
        schedule.betas, REFERENCE[f"{case}/betas"], rtol=1e-6, atol=beta_atol
    )
    np.testing.assert_allclose(
        schedule.alphas_cumprod, REFERENCE[f"{case}/alphas_cumprod"], rtol=1e-6, atol=1e-6
    )


schedule_names = st.sampled_from(BetaSchedule.values())
lengths = st.integers(min_value=2, max_value=4000)


@given(name=schedule_names, num_train_timesteps=lengths)
def test_betas_in_unit_interval_and_alphas_cumprod_decreasing(
    name: str, num_train_timesteps: int
) -> None:
    schedule = NoiseSchedule(num_train_timesteps, beta_schedule=name)
    assert schedule.betas.shape == (num_train_timesteps,)
    assert schedule.betas.dtype == np.float64
    assert np.all((schedule.betas > 0) & (schedule.betas < 1))
    assert np.all(np.diff(schedule.alphas_cumprod) < 0)
    assert 0 < schedule.alphas_cumprod[-1] < schedule.alphas_cumprod[0] < 1


@given(name=schedule_names, num_train_timesteps=lengths)
def test_zero_terminal_snr(name: str, num_train_timesteps: int) -> None:
    plain = NoiseSchedule(num_train_timesteps, beta_schedule=name)
    rescaled = NoiseSchedule(num_train_timesteps, beta_schedule=name, rescale_betas_zero_snr=True)
    assert rescaled.alphas_cumprod[-1] == 0.0
    assert rescaled.snr[-1] == 0.0
    assert rescaled.betas[-1] == 1.0
    assert np.all((rescaled.betas[:-1] > 0) & (rescaled.betas[:-1] < 1))
    assert np.all(np.diff(rescaled.alphas_cumprod) < 0)
    assert abs(rescaled.alphas_cumprod[0] - plain.alphas_cumprod[0]) <= 1e-12


@given(name=schedule_names, num_train_timesteps=st.integers(2, 300))
def test_derived_arrays(name: str, num_train_timesteps: int) -> None:
    s = NoiseSchedule(num_train_timesteps, beta_schedule=name)
    np.testing.assert_allclose(s.alphas, 1 - s.betas, rtol=0, atol=0)
    np.testing.assert_allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1], rtol=0, atol=0)
    assert s.alphas_cumprod_prev[0] == 1.0
    np.testing.assert_allclose(s.sqrt_alphas_cumprod**2, s.alphas_cumprod, rtol=1e-14)
    np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod**2, 1 - s.alphas_cumprod, rtol=1e-14)
    np.testing.assert_allclose(s.snr, s.alphas_cumprod / (1 - s.alphas_cumprod), rtol=1e-14)
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == np.log(s.posterior_variance[1])
    np.testing.assert_allclose(
        s.posterior_log_variance_clipped[1:], np.log(s.posterior_variance[1:]), rtol=1e-14
    )
    for array in (s.posterior_mean_coef1, s.posterior_mean_coef2, s.posterior_variance):
        assert array.shape == (num_train_timesteps,) and array.dtype == np.float64


def test_cosine_schedule_formula() -> None:
    schedule = NoiseSchedule(1000, beta_schedule="squaredcos_cap_v2")
    t = np.arange(1001) / 1000
    alpha_bar = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    expected = np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    np.testing.assert_allclose(schedule.betas, expected, rtol=1e-12)
    assert schedule.betas[-1] == 0.999


def test_explicit_betas_and_rescale_function() -> None:
    betas = np.linspace(1e-3, 0.05, 20)
    schedule = NoiseSchedule(betas=betas)
    assert schedule.num_train_timesteps == 20
    np.testing.assert_array_equal(schedule.betas, betas)
    rescaled = NoiseSchedule(betas=betas, rescale_betas_zero_snr=True)
    np.testing.assert_array_equal(rescaled.betas, rescale_zero_terminal_snr(betas))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_train_timesteps": 77, "beta_schedule": "sigmoid", "beta_start": 1e-3},
        {"beta_schedule": "squaredcos_cap_v2", "rescale_betas_zero_snr": True},
        {"betas": [0.1, 0.2, 0.3]},
        {"betas": [0.1, 0.2, 0.3], "rescale_betas_zero_snr": True},
    ],
)
def test_config_round_trip_through_json(kwargs: dict) -> None:
    schedule = NoiseSchedule(**kwargs)
    config = json.loads(json.dumps(schedule.to_dict()))
    rebuilt = NoiseSchedule.from_dict(config)
    np.testing.assert_array_equal(rebuilt.betas, schedule.betas)
    np.testing.assert_array_equal(rebuilt.alphas_cumprod, schedule.alphas_cumprod)
    assert rebuilt.to_dict() == schedule.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta_schedule": "cosine"}, "squaredcos_cap_v2"),
        ({"num_train_timesteps": 1}, ">= 2"),
        ({"num_train_timesteps": 10.0}, "int"),
        ({"beta_start": 0.0}, "beta_start"),
        ({"beta_start": 0.1, "beta_end": 0.01}, "beta_start"),
        ({"beta_end": 1.0}, "beta_end"),
        ({"betas": [0.1, 0.0, 0.2]}, r"\(0, 1\)"),
        ({"betas": [0.1, 1.0, 0.2]}, "last"),
        ({"betas": [0.1, np.nan]}, "finite"),
        ({"betas": [[0.1, 0.2]]}, "1-D"),
        ({"betas": [0.1, 0.2], "num_train_timesteps": 3}, "len"),
    ],
)
def test_invalid_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoiseSchedule(**kwargs)


def test_last_beta_may_be_one() -> None:
    schedule = NoiseSchedule(betas=[0.1, 0.2, 1.0])
    assert schedule.alphas_cumprod[-1] == 0.0


def test_plot_schedules_writes_png(tmp_path) -> None:
    schedules = {
        "linear": NoiseSchedule(),
        "cosine": NoiseSchedule(beta_schedule="squaredcos_cap_v2"),
        "sigmoid T=500": NoiseSchedule(500, beta_schedule="sigmoid"),
    }
    path = plot_schedules(schedules, tmp_path / "plots" / "schedules.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = plot_schedules(NoiseSchedule(), tmp_path / "one.png")
    assert single.stat().st_size > 1000
    with pytest.raises(ValueError, match="at least one"):
        plot_schedules({}, tmp_path / "none.png")
