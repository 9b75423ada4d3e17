"""Winograd F(2x2, 3x3) against im2col + GEMM on this machine: every 3x3 stride-1
convolution of mnist-tiny (forward, input gradient, weight gradient), then whole steps with
the Winograd fast paths, with its weight gradient off, and with none, alternating in one
process.

    python benchmarks/bench_winograd.py [--threads 2] [--rounds 3]

Prints ms (medians of alternating calls), the float32 error of each method's forward
against the float64 convolution, and which method the registry picks for each layer
(`winograd.MIN_CHANNELS`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
from timing import alternating_medians, cpu_name

import autograd
from autograd import optim
from autograd.kernels import conv_gemm, registry, winograd
from autograd.kernels.conv import Window
from autograd.nn import functional as F
from autograd.nn.parallel import sliced_forward
from tinydiff.models import build_model
from tinydiff.training import TrainConfig, Trainer

# (in, out channels, size) of mnist-tiny's 3x3 stride-1 convolutions
LAYERS = [(1, 32, 28), (32, 32, 28), (64, 32, 28), (96, 32, 28), (64, 64, 28), (32, 1, 28),
          (32, 64, 14), (64, 64, 14), (128, 64, 14), (96, 64, 14), (64, 64, 7), (128, 64, 7)]
WINOGRAD_PATHS = (winograd.conv2d_winograd, winograd.conv2d_input_grad_winograd,
                  winograd.conv2d_weight_grad_winograd)
OPS = (("conv2d", "forward"), ("conv2d_input_grad", "input grad"),
       ("conv2d_weight_grad", "weight grad"))


def layer_table(rng: np.random.Generator, batch: int, repeats: int) -> None:
    print("ms, im2col / Winograd (* the one the registry picks); float32 error of the forward "
          "against float64, im2col / Winograd\n")
    print("| layer | forward | input grad | weight grad | forward error |\n"
          "| --- | --- | --- | --- | --- |")
    for channels, out_channels, size in LAYERS:
        def channels_last(*shape):  # NCHW views of channels-last arrays, as the UNet's
            return rng.standard_normal((shape[0], *shape[2:], shape[1])).astype(
                np.float32).transpose(0, 3, 1, 2)
        x, grad = channels_last(batch, channels, size, size), channels_last(
            batch, out_channels, size, size)
        weight = (rng.standard_normal((out_channels, channels, 3, 3))
                  / np.sqrt(9 * channels)).astype(np.float32)
        geometry = dict(window=Window((3, 3), (1, 1), (1, 1), (1, 1), (size, size)), groups=1)
        arguments = {"conv2d": (x, weight, None), "conv2d_input_grad": (grad, weight, x.shape),
                     "conv2d_weight_grad": (x, grad)}
        cells = []
        for op, _ in OPS:
            paths = [conv_gemm.__dict__[f"{op}_gemm"], winograd.__dict__[f"{op}_winograd"]]
            chosen = registry.lookup(op, *arguments[op][:2], **geometry)
            times = alternating_medians([partial(run, *arguments[op], **geometry)
                                         for run in paths], repeats)
            cells.append(" / ".join(f"{t * 1e3:.1f}{'*' if run is chosen else ''}"
                                    for run, t in zip(paths, times)))
        exact = conv_gemm.conv2d_gemm(x.astype(np.float64), weight.astype(np.float64), None,
                                      **geometry)
        errors = [np.abs(run(x, weight, None, **geometry) - exact).max()
                  for run in (conv_gemm.conv2d_gemm, winograd.conv2d_winograd)]
        print(f"| {channels}->{out_channels} @{size} | {' | '.join(cells)} | "
              f"{errors[0]:.1e} / {errors[1]:.1e} |")


def step_table(rng: np.random.Generator, rounds: int) -> None:
    images = rng.uniform(-1, 1, (32 * 8, 1, 28, 28)).astype(np.float32)
    trainer = Trainer(TrainConfig(batch_size=32, steps=10**6), images,
                      np.zeros(len(images), np.int64))
    model = build_model("mnist-tiny")
    optimizer = optim.AdamW(model.parameters(), lr=1e-4)
    x, noise = (autograd.tensor(rng.standard_normal((64, 1, 28, 28)).astype(np.float32))
                for _ in range(2))
    t = autograd.tensor(rng.integers(0, 1000, 64))
    x_sample = rng.standard_normal((256, 1, 28, 28)).astype(np.float32)
    t_sample = rng.integers(0, 1000, 256)
    sample = sliced_forward(model)

    def plain_loop() -> None:
        loss = F.mse_loss(model(x, t), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sampling_forward() -> None:
        with autograd.no_grad():
            sample(x_sample, t_sample)

    cases = {"trainer step, batch 32": trainer.train_step,
             "plain loop, batch 64": plain_loop,
             "sampling forward, batch 256": sampling_forward}
    hidden = {"im2col": WINOGRAD_PATHS, "Winograd, weight grad by im2col":
              (winograd.conv2d_weight_grad_winograd,), "Winograd": ()}
    times = {(name, method): [] for name in cases for method in hidden}

    def timed(name: str, method: str) -> None:
        with registry.without(*hidden[method]):
            time.sleep(0.3)
            start = time.perf_counter()
            cases[name]()
            times[name, method].append(time.perf_counter() - start)

    for name in cases:  # warm-up: compilation, allocator
        for method in hidden:
            timed(name, method)
    for key in times:
        times[key].clear()
    for round_ in range(rounds):
        for name in cases:
            for method in list(hidden)[::1 if round_ % 2 == 0 else -1]:
                timed(name, method)
    print(f"| work | {' ms | '.join(hidden)} ms | speedup |\n| --- |{' ---: |' * 4}")
    for name in cases:
        medians = [statistics.median(times[name, method]) for method in hidden]
        print(f"| {name} | {' | '.join(f'{m * 1e3:.0f}' for m in medians)} | "
              f"{medians[0] / medians[-1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--batch", type=int, default=64, help="the layer table's batch")
    args = parser.parse_args()
    autograd.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_name()}; {args.threads} thread(s); "
          f"medians of {args.rounds} alternating rounds\n")
    layer_table(rng, args.batch, repeats=5)
    print()
    step_table(rng, args.rounds)


if __name__ == "__main__":
    main()
