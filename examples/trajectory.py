"""Iterative refinement: what the sampler holds at each step, and what it predicts.

    python examples/trajectory.py --ckpt runs/default/ckpt.npz [--steps 50] [--out trajectory.png]

DDIM from pure noise x_T to x_0: for a few samples, the top row of each pair is x_t and the
bottom row the model's current guess of the clean image, x0 = (x_t -
sqrt_one_minus_alphas_cumprod_t eps) / sqrt_alphas_cumprod_t. The guess settles on a digit
long before the noise is gone; the last steps only sharpen it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import autograd
from tinydiff.plots import plot_trajectory
from tinydiff.samplers import class_guidance, sample
from tinydiff.training import load_for_sampling


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--columns", type=int, default=10, help="steps shown")
    parser.add_argument("--count", type=int, default=4, help="samples shown")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("trajectory.png"))
    args = parser.parse_args(argv)
    model, schedule, prediction_type, _ = load_for_sampling(args.ckpt)
    shown = np.unique(np.linspace(0, args.steps - 1, min(args.columns, args.steps)).round())
    labels = np.arange(args.count) % 10  # used by class-conditional models only
    with autograd.no_grad():
        _, trajectory = sample(model, schedule, (args.count, 1, 28, 28), sampler="ddim",
                               num_inference_steps=args.steps, seed=args.seed,
                               prediction_type=prediction_type, return_trajectory=True,
                               trajectory_steps=shown.astype(int).tolist(),
                               **class_guidance(model, labels))
    path = plot_trajectory(trajectory.timesteps, trajectory.samples,
                           trajectory.pred_original_samples, args.out, count=args.count)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
