"""Learned variance (improved DDPM) against fixed variance: NLL, and samples at 1000 steps
and respaced to fewer.

    python examples/learned_variance.py --fixed runs/default/ckpt.npz \
        --learned runs/learned/ckpt.npz [--steps 1000 100 50] [--n 300] [--n-full 30]

Both checkpoints should come from the same recipe (`tinydiff train` with and without
`--variance-type learned_range`). For each: the NLL bound in bits/dim on test images, then
DDPM samples at each step count (respaced: betas recomputed between the visited timesteps)
with the variance the model was trained for, scored by `tinydiff.eval`. With `--ignore-learned`
the learned model is also sampled with its variance channels dropped (fixed_small), which
separates the variance from the training. Writes a figure of the learned variance against t
(between beta tilde and beta) beside one row of samples per setting.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import autograd
from autograd.nn.parallel import sliced_forward
from tinydiff.data import load_mnist
from tinydiff.diffusion import q_sample, split_model_output
from tinydiff.eval import evaluate_samples, nll_bits_per_dim
from tinydiff.plots import image_grid
from tinydiff.samplers import class_guidance, sample
from tinydiff.training import checkpoint_variance_type, load_for_sampling


def learned_interpolation_curve(model, schedule, images: np.ndarray, timesteps: np.ndarray,
                                seed: int = 0) -> np.ndarray:
    """Mean over pixels and images of the learned interpolation weight frac = (v + 1) / 2 at
    each of `timesteps` (0: Sigma = beta tilde, 1: Sigma = beta), on noised `images`."""
    generator = np.random.default_rng(seed)
    curve = []
    for step in timesteps:
        t = np.full(len(images), step, dtype=np.int64)
        x_t = q_sample(schedule, images, t, generator.standard_normal(images.shape,
                                                                       dtype=images.dtype))
        with autograd.no_grad():
            output = np.asarray(model(x_t, t), dtype=np.float64)
        _, values = split_model_output(output, images, "learned_range")
        curve.append(float(np.mean((values + 1.0) / 2.0)))
    return np.asarray(curve)


def drop_variance(forward, channels: int):
    """A learned-variance model's prediction channels alone (to sample with a fixed variance)."""
    return lambda x, t, **cond: np.asarray(forward(x, t, **cond))[:, :channels]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed", type=Path, required=True, help="fixed-variance checkpoint")
    parser.add_argument("--learned", type=Path, required=True, help="learned_range checkpoint")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 100, 50])
    parser.add_argument("--n", type=int, default=300, help="samples per setting")
    parser.add_argument("--n-full", type=int, default=30,
                        help="samples at the full step count T (each costs T model calls)")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance for conditional models (1: none)")
    parser.add_argument("--nll-images", type=int, default=16)
    parser.add_argument("--ignore-learned", action="store_true",
                        help="also sample the learned model with fixed_small variance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("learned-variance.png"))
    args = parser.parse_args(argv)

    test_images = load_mnist("test")[0]
    loaded = {name: load_for_sampling(path) for name, path in
              (("fixed", args.fixed), ("learned", args.learned))}
    if checkpoint_variance_type(loaded["learned"][3]) != "learned_range":
        raise SystemExit(f"{args.learned} was not trained with --variance-type learned_range")
    settings = [("fixed", checkpoint_variance_type(loaded["fixed"][3])),
                ("learned", "learned_range")]
    if args.ignore_learned:
        settings.append(("learned", "fixed_small"))

    print("| model | variance | NLL bits/dim | DDPM steps | samples | MNIST-FID | reference "
          "| confidence | as asked | s/sample |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows: dict[str, np.ndarray] = {}
    for name, variance_type in settings:
        model, schedule, prediction_type, state = loaded[name]
        forward = sliced_forward(model)
        if variance_type != checkpoint_variance_type(state):
            forward = drop_variance(forward, model.config.in_channels)
        nll = "-"
        if args.nll_images:
            mean, error = nll_bits_per_dim(forward, schedule, test_images[: args.nll_images],
                                           prediction_type, seed=args.seed,
                                           variance_type=variance_type)
            nll = f"{mean:.3f} +- {error:.3f}"
        for steps in args.steps:
            count = args.n_full if steps == schedule.num_train_timesteps else args.n
            labels = np.arange(count) % 10
            started = time.perf_counter()
            with autograd.no_grad():
                images = sample(forward, schedule, (count, 1, 28, 28), "ddpm", steps,
                                generator=np.random.default_rng(args.seed),
                                prediction_type=prediction_type, variance_type=variance_type,
                                **class_guidance(model, labels, args.guidance))
            seconds = (time.perf_counter() - started) / count
            conditional = model.config.num_classes is not None
            report = evaluate_samples(images, seed=args.seed,
                                      labels=labels if conditional else None)
            asked = "-" if report.label_accuracy is None else f"{report.label_accuracy:.3f}"
            print(f"| {name} | {variance_type} | {nll} | {steps} | {count} | {report.fid:.1f} | "
                  f"{report.reference_fid:.1f} | {report.mean_confidence:.3f} | {asked} | "
                  f"{seconds:.2f} |", flush=True)
            rows[f"{name} / {variance_type}\nDDPM {steps}"] = images[:10]

    model, schedule = loaded["learned"][0], loaded["learned"][1]
    timesteps = np.unique(np.linspace(0, schedule.num_train_timesteps - 1, 40).astype(int))
    curve = learned_interpolation_curve(model, schedule, test_images[:8], timesteps,
                                        args.seed)
    print("learned frac (0: beta tilde, 1: beta) at t = " + ", ".join(
        f"{t}: {value:.2f}" for t, value in list(zip(timesteps, curve))[::4]))
    return plot_figure(schedule, timesteps, curve, rows, args.out)


def plot_figure(schedule, timesteps: np.ndarray, curve: np.ndarray,
                rows: dict[str, np.ndarray], path: Path) -> Path:
    """Left: the learned interpolation weight against t, with log(beta / beta tilde), the
    room it has; right: one row of samples per setting."""
    figure = Figure(figsize=(13, 1.1 * len(rows) + 1.5), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.6])
    left.plot(timesteps, curve, "o-", markersize=3, label="learned frac (mean over pixels)")
    for bound in (0.0, 1.0):  # v in [-1, 1]: between beta tilde and beta; outside: beyond them
        left.axhline(bound, color="black", linewidth=0.5, linestyle="--")
    left.set_xlabel("t")
    left.set_ylabel("frac: 0 = beta tilde, 1 = beta")
    room = left.twinx()
    every = np.arange(1, schedule.num_train_timesteps)
    room.semilogy(every, np.log(schedule.betas[every]) - schedule.posterior_log_variance_clipped[
        every], color="gray", linewidth=1, label="log(beta / beta tilde)")
    room.set_ylabel("log(beta / beta tilde)", color="gray")
    left.legend(fontsize=8, loc="upper center")
    count = min(len(images) for images in rows.values())  # equal rows: the shortest's length
    tiles = [image_grid(images[:count], nrow=count) for images in rows.values()]
    right.imshow(np.concatenate(tiles, axis=0), cmap="gray")
    height = tiles[0].shape[0]
    right.set_yticks([height * (i + 0.5) for i in range(len(tiles))], list(rows), fontsize=7)
    right.set_xticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
