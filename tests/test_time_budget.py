"""--time-budget: durations, the step count a probe chooses (on a fake clock), the record in
the checkpoint, and that a budget run is, bit for bit, the `--steps N` run it names."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from training_testing import micro_config

import autograd
import tinydiff.data
import tinydiff.training
from tinydiff import time_budget
from tinydiff.cli import main
from tinydiff.time_budget import (
    BudgetEstimate,
    checkpoint_saves,
    format_duration,
    parse_duration,
    steps_for_budget,
)
from tinydiff.training import TrainConfig, Trainer, read_checkpoint

# ---- durations ----------------------------------------------------------------------------

GOOD_DURATIONS = {"30m": 1800, "90s": 90, "1h30m": 5400, "1h": 3600, "45": 45, "0.5": 0.5,
                  "1h2m3s": 3723, "2m30s": 150, "1.5h": 5400, "1h05m": 3900}
BAD_DURATIONS = ["abc", "0m", "0", "0h0m0s", "-5m", "30x", "", "m", "1m30", "30s1m",
                 "1h 30m", "30M", "inf", "nan", "1e3", "9" * 400]


@pytest.mark.parametrize("text", sorted(GOOD_DURATIONS))
def test_durations_are_read_in_seconds(text):
    assert parse_duration(text) == GOOD_DURATIONS[text]


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="expected a (positive, finite )?duration"):
        parse_duration(text)


@given(hours=st.integers(0, 99), minutes=st.integers(0, 999), seconds=st.integers(0, 999),
       given_units=st.sets(st.sampled_from("hms"), min_size=1))
def test_any_hours_minutes_seconds_in_order(hours, minutes, seconds, given_units):
    values = {"h": hours, "m": minutes, "s": seconds}
    text = "".join(f"{values[unit]}{unit}" for unit in "hms" if unit in given_units)
    total = sum(values[unit] * scale for unit, scale in (("h", 3600), ("m", 60), ("s", 1))
                if unit in given_units)
    if total == 0:
        with pytest.raises(ValueError, match="positive"):
            parse_duration(text)
    else:
        assert parse_duration(text) == total


@given(seconds=st.integers(10, 10**7))
def test_formatted_durations_read_back(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_formatted_durations():
    assert [format_duration(s) for s in (3.21, 42, 1780, 1800, 3600, 3907, 3601)] == \
        ["3.2s", "42s", "29m40s", "30m", "1h00m", "1h05m07s", "1h00m01s"]


# ---- the step count, on a fake clock ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTrainer:
    """Spends fake time: the next of `step_seconds` per step, `save_seconds` per save."""

    def __init__(self, clock: FakeClock, step_seconds, save_seconds: float) -> None:
        self.clock, self.step_seconds, self.save_seconds = clock, iter(step_seconds), save_seconds

    def train_step(self) -> None:
        self.clock.now += next(self.step_seconds)

    def read_losses(self) -> None:
        pass

    def save(self, out_dir) -> None:
        self.clock.now += self.save_seconds


def fake_probe(budget: float, step_seconds=None, save_seconds: float = 0.25,
               build_seconds: float = 1.0, **options) -> BudgetEstimate:
    """steps_for_budget of a fake trainer that takes `build_seconds` to build."""
    clock = FakeClock()
    step_seconds = [0.5] * 100 if step_seconds is None else step_seconds

    def make_trainer(config: TrainConfig) -> FakeTrainer:
        clock.now += build_seconds
        return FakeTrainer(clock, step_seconds, save_seconds)

    return steps_for_budget(TrainConfig(checkpoint_every=10), budget,
                            make_trainer=make_trainer, clock=clock, **options)


def test_the_step_count_is_the_most_that_fit_in_what_the_probe_left():
    estimate = fake_probe(200.0)
    # building 1 + 2 warm-up and 8 timed steps of 0.5 + two saves of 0.25
    assert estimate.probe_seconds == 6.5 and estimate.probe_steps == 8
    assert estimate.seconds_per_step == 0.5 and estimate.save_seconds == 0.25

    def cost(steps):
        return steps * 0.5 + checkpoint_saves(steps, 10) * 0.25

    left = 200.0 - 6.5
    assert cost(estimate.steps) <= left < cost(estimate.steps + 1)
    assert estimate.steps == 368 and estimate.estimate_seconds == cost(368) == 193.25
    assert estimate.train_config(TrainConfig()).steps == 368
    assert "0.5 s/step measured over 8 steps -> 368 steps, estimated 3m13s" in \
        estimate.summary()


def test_the_median_step_time_is_used():
    estimate = fake_probe(200.0, step_seconds=[5, 5, 0.375, 0.125, 0.25, 8.0, 0.25],
                          probe_steps=5, probe_fraction=0.5)
    assert estimate.seconds_per_step == 0.25 and estimate.probe_steps == 5


def test_the_probe_stops_early_at_its_share_of_the_budget():
    # 5% of 100 s: after building (1) and warming up (1), the 7th timed step passes 5 s
    assert fake_probe(100.0, probe_fraction=0.05).probe_steps == 7


def test_at_least_one_step_while_the_probe_left_time():
    assert fake_probe(9.0, save_seconds=3.0).steps == 1


def test_a_budget_the_probe_uses_up_is_an_error():
    with pytest.raises(ValueError, match=r"time budget 5.0s: the probe \(2 warm-up steps and "
                       r"1 timed step of 0.5 s, two checkpoint saves\) took 6.0s, the whole "
                       "budget; give a larger --time-budget or a fixed --steps"):
        fake_probe(5.0, build_seconds=4.0)  # e.g. numba compiling
    for budget in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="budget_seconds must be a positive finite"):
            fake_probe(budget)


# ---- the record in the checkpoint ---------------------------------------------------------

MICRO = dict(steps=3, batch_size=4, warmup_steps=1)


def test_the_record_survives_save_load_and_resume(tmp_path, digits):
    estimate = BudgetEstimate(budget_seconds=60.0, steps=3, seconds_per_step=0.1,
                              probe_steps=8, probe_seconds=1.5, save_seconds=0.2,
                              estimate_seconds=0.7)
    trainer = Trainer(micro_config(**MICRO), *digits)
    trainer.time_budget = estimate.to_dict()
    trainer.train(tmp_path, progress=False)
    state = read_checkpoint(tmp_path / "ckpt.npz")
    assert BudgetEstimate(**state["time_budget"]) == estimate
    assert 0 < state["train_seconds"] <= trainer.train_seconds
    resumed = Trainer.resume(tmp_path / "ckpt.npz", *digits, steps=4)
    assert resumed.time_budget == estimate.to_dict()
    assert resumed.train_seconds == state["train_seconds"]
    resumed.train(tmp_path, progress=False)
    again = read_checkpoint(tmp_path / "ckpt.npz")
    assert again["time_budget"] == estimate.to_dict()
    assert again["train_seconds"] > state["train_seconds"]


def test_checkpoints_without_the_record_still_resume(tmp_path, digits):
    Trainer(micro_config(**{**MICRO, "steps": 2}), *digits).train(tmp_path, progress=False)
    state = read_checkpoint(tmp_path / "ckpt.npz")
    del state["train_seconds"]  # as written before it was recorded
    autograd.save(state, tmp_path / "ckpt.npz")
    resumed = Trainer.resume(tmp_path / "ckpt.npz", *digits, steps=3)
    assert resumed.train_seconds is None and resumed.time_budget is None
    resumed.train(tmp_path, progress=False)
    state = read_checkpoint(tmp_path / "ckpt.npz")
    assert state["step"] == 3 and "train_seconds" not in state and "time_budget" not in state


# ---- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["--steps", "5"], "--time-budget chooses the number of steps and --steps fixes it: "
                       "pick one"),
    (["--resume"], "--time-budget sizes a new run; --resume continues"),
    (["--profile", "2"], "--profile times N steps and exits, --time-budget trains: pick one"),
])
def test_time_budget_conflicts_are_usage_errors(tmp_path, capsys, extra, message):
    assert main(["train", "--out", str(tmp_path / "run"), "--time-budget", "1m", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argument", ["--time-budget=abc", "--time-budget=0m",
                                      "--time-budget=-5m", "--time-budget=30x"])
def test_bad_time_budgets_are_argument_errors(tmp_path, capsys, argument):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path), argument])
    assert exit_info.value.code == 2
    assert "argument --time-budget: expected a" in capsys.readouterr().err


class TickClock:
    """A clock that advances 1/16 s each time it is read: the probe's measurements, and so
    the step count, do not depend on the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1 / 16
        return self.now


def assert_identical(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{index}")
    elif isinstance(a, (np.ndarray, autograd.Tensor)):
        x, y = (np.asarray(v.numpy() if isinstance(v, autograd.Tensor) else v) for v in (a, b))
        assert x.dtype == y.dtype, where
        np.testing.assert_array_equal(x, y, err_msg=where)
    else:
        assert a == b, where


def test_a_budget_run_is_the_steps_run_it_names(tmp_path, monkeypatch, capsys, digits):
    for module in (tinydiff.data, tinydiff.training):
        monkeypatch.setattr(module, "load_mnist", lambda split, data_dir=None: digits)
    monkeypatch.setattr(time_budget, "steps_for_budget",
                        functools.partial(steps_for_budget, clock=TickClock()))
    common = ["--preset", "micro", "--batch-size", "4", "--warmup-steps", "2",
              "--lr-schedule", "cosine", "--checkpoint-every", "4", "--sample-n", "0",
              "--no-progress"]
    assert main(["train", "--out", str(tmp_path / "budget"), "--time-budget", "1.5s",
                 *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^time budget 1\.5s: 0\.0625 s/step measured over \d+ steps? -> \d+ "
                     r"steps, estimated", out, re.MULTILINE), out
    steps = int(re.search(r"--steps (\d+) with the same other options reproduces", out)[1])
    assert re.search(rf"^trained {steps} steps in .* \(estimate ", out, re.MULTILINE), out
    assert 4 < steps < 40  # several checkpoints, and a short test

    assert main(["train", "--out", str(tmp_path / "steps"), "--steps", str(steps),
                 *common]) == 0
    budget = read_checkpoint(tmp_path / "budget" / "ckpt.npz")
    fixed = read_checkpoint(tmp_path / "steps" / "ckpt.npz")
    record = budget.pop("time_budget")
    assert record["steps"] == steps == budget["step"] and record["budget_seconds"] == 1.5
    assert record["seconds_per_step"] == 1 / 16 and budget["train_seconds"] > 0
    del budget["train_seconds"], fixed["train_seconds"]
    assert_identical(budget, fixed, "ckpt")  # weights, EMA, Adam, schedules, data, RNGs
