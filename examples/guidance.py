"""Class-conditional sampling with classifier-free guidance.

    python examples/guidance.py --ckpt runs/cond/ckpt.npz [--scales 0 1 2 4] [--out guidance.png]

A model trained with `--class-conditional` saw each digit's label, and (10% of the time)
a null label instead. Sampling mixes the two predictions,
eps = eps(x, null) + w (eps(x, y) - eps(x, null)): w = 0 ignores the label, w = 1 is the
plain conditional model, and w > 1 pushes the sample further towards its digit (more
legible, less varied). Rows are guidance scales, columns the digits 0-9, all from the same
starting noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import autograd
from tinydiff.plots import plot_labelled_rows
from tinydiff.samplers import class_guidance, sample
from tinydiff.training import load_for_sampling


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("guidance.png"))
    args = parser.parse_args(argv)
    model, schedule, prediction_type, _ = load_for_sampling(args.ckpt)
    classes = model.config.num_classes
    if classes is None:
        raise SystemExit(f"{args.ckpt} holds an unconditional model; train one with "
                         "`tinydiff train --class-conditional`")
    labels = np.arange(classes)
    noise = np.random.default_rng(args.seed).standard_normal((classes, 1, 28, 28))
    rows = {}
    for scale in args.scales:
        with autograd.no_grad():
            rows[f"w = {scale:g}"] = sample(
                model, schedule, noise.shape, sampler="ddim", num_inference_steps=args.steps,
                x_T=noise.astype(np.float32), prediction_type=prediction_type,
                **class_guidance(model, labels, scale))
        print(f"guidance {scale:g}: done")
    path = plot_labelled_rows(rows, args.out, title="digits 0-9 by guidance scale w")
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
