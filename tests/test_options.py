"""Tests for tinydiff.options: parsed once where objects are built, plain strings in files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinydiff.cli import build_parser
from tinydiff.diffusion import training_losses
from tinydiff.options import (
    BetaSchedule,
    LossWeighting,
    LrSchedule,
    PredictionType,
    TimestepSampler,
    TimestepSpacing,
    VarianceType,
)
from tinydiff.samplers import SAMPLER_CLASSES, make_sampler
from tinydiff.schedules import NoiseSchedule
from tinydiff.training import TrainConfig

OPTIONS = (PredictionType, VarianceType, TimestepSpacing, BetaSchedule, LossWeighting,
           LrSchedule, TimestepSampler)


@pytest.mark.parametrize("option", OPTIONS)
def test_parse_takes_members_and_their_strings(option):
    for member in option:
        assert option.parse(member) is member
        assert option.parse(member.value) is member
        assert member == member.value and str(member) == f"{member}" == member.value
        assert json.dumps(member) == json.dumps(member.value)


@pytest.mark.parametrize("option", OPTIONS)
def test_parse_names_the_option_the_value_and_the_choices(option):
    for bad in ("nope", None, 3, ["epsilon"]):
        with pytest.raises(ValueError) as error:
            option.parse(bad)
        message = str(error.value)
        assert option.option_name() in message and repr(bad) in message
        assert all(repr(value) in message for value in option.values())


def test_option_names():
    assert [option.option_name() for option in OPTIONS] == [
        "prediction_type", "variance_type", "timestep_spacing", "beta_schedule",
        "loss_weighting", "lr_schedule", "timestep_sampler"]


def test_train_config_parses_once_and_stores_strings():
    config = TrainConfig(prediction_type="v_prediction", variance_type="learned_range",
                         beta_schedule="squaredcos_cap_v2", lr_schedule="cosine",
                         loss_weighting="uniform", timestep_sampler="loss-second-moment")
    assert config.prediction_type is PredictionType.V_PREDICTION
    assert config.variance_type is VarianceType.LEARNED_RANGE
    assert config.beta_schedule is BetaSchedule.SQUAREDCOS_CAP_V2
    assert config.lr_schedule is LrSchedule.COSINE
    assert config.loss_weighting is LossWeighting.UNIFORM
    assert config.timestep_sampler is TimestepSampler.LOSS_SECOND_MOMENT
    stored = config.to_dict()
    for option in OPTIONS:
        if option is not TimestepSpacing:  # a sampling option, not a training one
            assert type(stored[option.option_name()]) is str
    assert TrainConfig.from_dict(json.loads(json.dumps(stored))) == config
    with pytest.raises(ValueError, match="lr_schedule 'linear'.*prediction_type 'x0'.*"
                       "loss_weighting 'snr'.*timestep_sampler 'importance'.*"
                       "beta_schedule 'cosine'"):
        TrainConfig(prediction_type="x0", beta_schedule="cosine", lr_schedule="linear",
                    loss_weighting="snr", timestep_sampler="importance")


def test_training_losses_parses_its_options():
    schedule = NoiseSchedule(10)
    x0 = np.zeros((2, 1, 2, 2))
    model = lambda x_t, t: x_t  # noqa: E731
    for option, value in (("prediction_type", "x0"), ("loss_weighting", "snr"),
                          ("variance_type", "learned")):
        with pytest.raises(ValueError, match=f"unknown {option} '{value}'"):
            training_losses(model, schedule, x0, np.random.default_rng(0), **{option: value})


def test_schedule_parses_once_and_stores_strings():
    schedule = NoiseSchedule(10, beta_schedule="sigmoid")
    assert schedule.beta_schedule is BetaSchedule.SIGMOID
    assert type(schedule.to_dict()["beta_schedule"]) is str
    rebuilt = NoiseSchedule.from_dict(json.loads(json.dumps(schedule.to_dict())))
    np.testing.assert_array_equal(rebuilt.betas, schedule.betas)
    assert NoiseSchedule(betas=schedule.betas).beta_schedule == "custom"
    with pytest.raises(ValueError, match="unknown beta_schedule 'cosine'"):
        NoiseSchedule(10, beta_schedule="cosine")


@pytest.mark.parametrize("name", sorted(SAMPLER_CLASSES))
def test_every_sampler_parses_its_options_when_built(name):
    schedule = NoiseSchedule(20)
    sampler = make_sampler(name, schedule, 4, prediction_type="v_prediction",
                           timestep_spacing="trailing", variance_type="learned_range")
    assert sampler.prediction_type is PredictionType.V_PREDICTION
    assert sampler.timestep_spacing is TimestepSpacing.TRAILING
    assert sampler.variance_type is VarianceType.LEARNED_RANGE
    assert "prediction_type='v_prediction'" in repr(sampler)
    for option, value in (("prediction_type", "x0"), ("timestep_spacing", "uniform"),
                          ("variance_type", "learned")):
        with pytest.raises(ValueError, match=f"unknown {option} '{value}'"):
            make_sampler(name, schedule, 4, **{option: value})


def test_the_command_line_takes_its_choices_from_the_options():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    choices = {action.dest: tuple(action.choices)
               for command in commands.values() for action in command._actions
               if action.choices is not None}
    assert choices["prediction_type"] == PredictionType.values()
    assert choices["variance_type"] == VarianceType.values()
    assert choices["beta_schedule"] == BetaSchedule.values()
    assert choices["schedules"] == BetaSchedule.values()
    assert choices["spacing"] == TimestepSpacing.values()
    assert choices["loss_weighting"] == LossWeighting.values()
    assert choices["lr_schedule"] == LrSchedule.values()
    assert choices["timestep_sampler"] == TimestepSampler.values()
