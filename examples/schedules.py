"""Comparing noise schedules: how fast each destroys the signal.

    python examples/schedules.py [--out schedules.png]

Plots sqrt_alphas_cumprod (signal) and sqrt_one_minus_alphas_cumprod (noise) for the linear,
scaled-linear, cosine (squaredcos_cap_v2) and sigmoid schedules, and prints where each
crosses SNR = 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinydiff.plots import plot_schedules
from tinydiff.schedules import NoiseSchedule


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("schedules.png"))
    args = parser.parse_args(argv)
    schedules = {
        "linear": NoiseSchedule(1000, "linear"),
        "scaled_linear": NoiseSchedule(1000, "scaled_linear", beta_start=0.00085,
                                       beta_end=0.012),
        "cosine": NoiseSchedule(1000, "squaredcos_cap_v2"),
        "sigmoid": NoiseSchedule(1000, "sigmoid"),
    }
    for name, schedule in schedules.items():
        crossing = int(np.argmax(schedule.snr < 1))
        print(f"{name:<14} SNR falls below 1 at t={crossing:4d}; "
              f"final sqrt_alphas_cumprod={schedule.sqrt_alphas_cumprod[-1]:.4f}")
    path = plot_schedules(schedules, args.out)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
