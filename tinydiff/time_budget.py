"""Training for a time budget: measure the first steps, then fix the step count.

    estimate = steps_for_budget(config, parse_duration("30m"), images, labels)
    trainer = Trainer(estimate.train_config(config), images, labels)
    trainer.time_budget = estimate.to_dict()  # saved in the checkpoint
    trainer.train("run")

`steps_for_budget` trains a throwaway probe `Trainer` of the same config (a few untimed
warm-up steps for numba's compilation and the caches, then a few timed ones, and two
checkpoint saves to a temporary folder) and discards it. The real run then starts from the
seed as any run does, so its step count alone fixes the learning-rate schedule, the EMA and
everything else: `--steps N` with the N chosen reproduces the run bit for bit, on any machine.
"""

from __future__ import annotations

import math
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tinydiff.training import TrainConfig, Trainer

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?")
DURATION_FORMS = "30m, 90s, 1h30m, 1.5h or 45 (seconds)"


def parse_duration(text: str) -> float:
    """Seconds of a duration written as hours, minutes and seconds in that order, each
    optional ("1h30m", "30m", "90s", "1h2m3s", "1.5h"), or as plain seconds ("45").
    ValueError for anything else, and for durations that are not positive."""
    if re.fullmatch(_NUMBER, text):
        seconds = float(text)
    elif text and (match := _DURATION.fullmatch(text)):
        seconds = sum(float(match[unit] or 0) * scale
                      for unit, scale in (("h", 3600), ("m", 60), ("s", 1)))
    else:
        raise ValueError(f"expected a duration such as {DURATION_FORMS}, got {text!r}")
    if not 0 < seconds < math.inf:
        raise ValueError(f"expected a positive, finite duration, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """"3.2s" under 10 s, else whole seconds as "42s", "29m40s", "30m", "1h05m" or
    "1h00m07s" (what `parse_duration` reads back)."""
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if not hours:
        return f"{minutes}m{secs:02d}s" if minutes and secs else \
            f"{minutes}m" if minutes else f"{secs}s"
    return f"{hours}h{minutes:02d}m" + (f"{secs:02d}s" if secs else "")


def plural(count: int, noun: str) -> str:
    """"1 step", "8 steps"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def checkpoint_saves(steps: int, checkpoint_every: int) -> int:
    """How many times `Trainer.train` saves in a run of `steps` steps: every
    `checkpoint_every` steps and at the end."""
    return math.ceil(steps / checkpoint_every)


@dataclass(frozen=True)
class BudgetEstimate:
    """The step count `steps_for_budget` chose and what it measured (seconds)."""

    budget_seconds: float
    steps: int  # the run's step count: `--steps steps` reproduces it
    seconds_per_step: float  # the median of the timed probe steps
    probe_steps: int  # timed probe steps (after the warm-up steps)
    probe_seconds: float  # the whole probe: building, warm-up, timed steps, saves
    save_seconds: float  # one checkpoint save
    estimate_seconds: float  # the run's training: steps and checkpoint saves

    def train_config(self, config: TrainConfig) -> TrainConfig:
        """`config` with this estimate's step count."""
        return replace(config, steps=self.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """"time budget 30m: 0.52 s/step measured over 8 steps -> 3400 steps, estimated
        29m40s (probe 9.1s)"."""
        return (f"time budget {format_duration(self.budget_seconds)}: "
                f"{self.seconds_per_step:.3g} s/step measured over "
                f"{plural(self.probe_steps, 'step')} "
                f"-> {self.steps} steps, estimated {format_duration(self.estimate_seconds)} "
                f"(probe {format_duration(self.probe_seconds)})")


def steps_for_budget(config: TrainConfig, budget_seconds: float,
                     images: np.ndarray | None = None, labels: np.ndarray | None = None,
                     device: str | None = None, *, probe_steps: int = 8,
                     probe_warmup: int = 2, probe_fraction: float = 0.05,
                     make_trainer: Callable[[TrainConfig], Trainer] | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> BudgetEstimate:
    """The most steps of `config` that fit in `budget_seconds` together with this probe.

    A probe trainer (`make_trainer(config)`, default `Trainer(config, images, labels,
    device=device)`) runs `probe_warmup` untimed steps, then up to `probe_steps` timed ones
    (fewer once the probe has used `probe_fraction` of the budget; each waits for the
    device), then saves twice to a temporary folder (the second save is timed). The step
    count N is the largest with N * seconds_per_step + saves * save_seconds within what the
    probe left of the budget, and at least 1. ValueError if the probe used up the budget."""
    if not 0 < budget_seconds < math.inf:
        raise ValueError(f"budget_seconds must be a positive finite number, got "
                         f"{budget_seconds}")
    if probe_steps < 1 or probe_warmup < 0:
        raise ValueError(f"probe_steps must be >= 1 and probe_warmup >= 0, got "
                         f"{probe_steps} and {probe_warmup}")
    if make_trainer is None:
        def make_trainer(config: TrainConfig) -> Trainer:
            return Trainer(config, images, labels, device=device)

    started = clock()
    trainer = make_trainer(config)
    for _ in range(probe_warmup):
        trainer.train_step()
    trainer.read_losses()  # waits for the device
    times: list[float] = []
    while len(times) < probe_steps:
        before = clock()
        trainer.train_step()
        trainer.read_losses()
        after = clock()
        times.append(after - before)
        if after - started > probe_fraction * budget_seconds:
            break
    with tempfile.TemporaryDirectory(prefix="tinydiff-probe-") as folder:
        trainer.save(Path(folder))  # the first save imports and warms up the plotting
        before = clock()
        trainer.save(Path(folder))
        save_seconds = clock() - before
    del trainer
    probe_seconds = clock() - started
    seconds_per_step = statistics.median(times)
    left = budget_seconds - probe_seconds
    probe = (f"the probe ({plural(probe_warmup, 'warm-up step')} and "
             f"{plural(len(times), 'timed step')} of "
             f"{seconds_per_step:.3g} s, two checkpoint saves) took "
             f"{format_duration(probe_seconds)}")
    if left <= 0:
        raise ValueError(f"time budget {format_duration(budget_seconds)}: {probe}, the "
                         "whole budget; give a larger --time-budget or a fixed --steps")
    every = config.checkpoint_every
    cost_per_step = seconds_per_step + save_seconds / every
    if not cost_per_step > 0:
        raise ValueError(f"{probe}: the clock measured no time for a step")

    def cost(steps: int) -> float:
        return steps * seconds_per_step + checkpoint_saves(steps, every) * save_seconds

    steps = max(1, math.floor(left / cost_per_step))
    while steps > 1 and cost(steps) > left:  # the saves are whole: a few steps fewer
        steps -= 1
    return BudgetEstimate(budget_seconds=float(budget_seconds), steps=steps,
                          seconds_per_step=seconds_per_step, probe_steps=len(times),
                          probe_seconds=probe_seconds, save_seconds=save_seconds,
                          estimate_seconds=cost(steps))


__all__ = ["BudgetEstimate", "steps_for_budget", "parse_duration", "format_duration",
           "checkpoint_saves"]
