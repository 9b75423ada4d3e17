"""Plots for tinydiff, drawn off-screen with matplotlib's Agg canvas and saved to a file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tinydiff.schedules import NoiseSchedule


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path)
    return path


def plot_schedules(
    schedules: NoiseSchedule | Mapping[str, NoiseSchedule], path: str | Path
) -> Path:
    """Plot sqrt(alpha_bar_t) (signal) and sqrt(1 - alpha_bar_t) (noise) against t / T.

    `schedules` is one schedule or a {label: schedule} mapping; t is normalised by T so schedules
    of different lengths share the axis. Returns the saved path.
    """
    if isinstance(schedules, NoiseSchedule):
        schedules = {schedules.beta_schedule: schedules}
    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule")
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    signal_axes, noise_axes = figure.subplots(1, 2, sharey=True)
    for label, schedule in schedules.items():
        t = np.arange(schedule.num_train_timesteps) / schedule.num_train_timesteps
        signal_axes.plot(t, schedule.sqrt_alphas_cumprod, label=label)
        noise_axes.plot(t, schedule.sqrt_one_minus_alphas_cumprod, label=label)
    signal_axes.set_title(r"signal $\sqrt{\bar\alpha_t}$")
    noise_axes.set_title(r"noise $\sqrt{1-\bar\alpha_t}$")
    for axes in (signal_axes, noise_axes):
        axes.set_xlabel("t / T")
        axes.grid(alpha=0.3)
    signal_axes.legend()
    return _save(figure, path)
