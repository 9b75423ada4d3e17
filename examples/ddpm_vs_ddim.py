"""DDPM with all 1,000 steps against DDIM with 50, 20 and 10, from one checkpoint.

    python examples/ddpm_vs_ddim.py --ckpt runs/default/ckpt.npz [--n 10] [--out samplers.png]

Each row is one sampler run on the same starting noise; the time per image is printed
beside it. DDIM (eta = 0) skips steps deterministically, so 50 steps cost 20x less than
DDPM's 1,000 and look much the same; at 10 steps the digits start to blur. The README
table has the MNIST-FID of each row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import autograd
from tinydiff.plots import plot_labelled_rows
from tinydiff.samplers import class_guidance, sample
from tinydiff.training import load_for_sampling


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--n", type=int, default=10, help="images per row")
    parser.add_argument("--ddpm-steps", type=int, default=1000)
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[50, 20, 10])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("samplers.png"))
    args = parser.parse_args(argv)
    model, schedule, prediction_type, _ = load_for_sampling(args.ckpt)
    noise = np.random.default_rng(args.seed).standard_normal((args.n, 1, 28, 28))
    runs = [("ddpm", args.ddpm_steps)] + [("ddim", steps) for steps in args.ddim_steps]
    rows = {}
    labels = np.arange(args.n) % 10  # used by class-conditional models only
    for sampler, steps in runs:
        started = time.perf_counter()
        with autograd.no_grad():
            # DDPM's own noise at each step differs from DDIM's (which has none at eta 0);
            # the starting x_T is shared.
            images = sample(model, schedule, noise.shape, sampler=sampler,
                            num_inference_steps=steps, x_T=noise.astype(np.float32),
                            generator=np.random.default_rng(args.seed + 1),
                            prediction_type=prediction_type,
                            **class_guidance(model, labels))
        per_image = (time.perf_counter() - started) / args.n
        label = f"{sampler.upper()} {steps}\n{per_image:.2f} s/img"
        print(f"{sampler} {steps:4d} steps: {per_image:.3f} s per image")
        rows[label] = images
    path = plot_labelled_rows(rows, args.out)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
