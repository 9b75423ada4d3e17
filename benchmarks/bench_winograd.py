"""Winograd F(2x2, 3x3) against im2col + GEMM on this machine: every 3x3 stride-1
convolution of mnist-tiny (forward), then whole steps with the Winograd fast paths and
without them, alternating in one process.

    python benchmarks/bench_winograd.py [--threads 2] [--rounds 3]

Prints ms (medians) and the speedup, and the float32 error of each method against the
float64 convolution.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
from timing import cpu_name, median_seconds

import autograd
from autograd import optim
from autograd.kernels import conv_gemm, registry, winograd
from autograd.kernels.conv import Window
from autograd.nn import functional as F
from autograd.nn.parallel import sliced_forward
from tinydiff.models import build_model
from tinydiff.training import TrainConfig, Trainer

# (in, out channels, size) of mnist-tiny's 3x3 stride-1 convolutions
LAYERS = [(32, 32, 28), (64, 32, 28), (96, 32, 28), (64, 64, 28), (32, 64, 14),
          (64, 64, 14), (128, 64, 14), (96, 64, 14), (64, 64, 7), (128, 64, 7)]
WINOGRAD_PATHS = (winograd.conv2d_winograd, winograd.conv2d_input_grad_winograd)


def layer_table(rng: np.random.Generator, batch: int, repeats: int) -> None:
    print("| layer (forward) | im2col ms | Winograd ms | speedup | float32 error im2col / "
          "Winograd |\n| --- | ---: | ---: | ---: | --- |")
    for channels, out_channels, size in LAYERS:
        x = rng.standard_normal((batch, size, size, channels)).astype(np.float32)
        weight = (rng.standard_normal((out_channels, channels, 3, 3))
                  / np.sqrt(9 * channels)).astype(np.float32)
        window = Window((3, 3), (1, 1), (1, 1), (1, 1), (size, size))
        matrices, transformed = conv_gemm.weight_matrices(weight, 1), winograd.kernel_transform(
            weight)
        exact = conv_gemm.conv_rows(x.astype(np.float64), matrices.astype(np.float64), window)
        error_im2col = np.abs(conv_gemm.conv_rows(x, matrices, window) - exact).max()
        error_winograd = np.abs(winograd.winograd_conv(x, transformed, None).reshape(
            exact.shape) - exact).max()
        im2col = median_seconds(partial(conv_gemm.conv_rows, x, matrices, window), repeats)
        fast = median_seconds(partial(winograd.winograd_conv, x, transformed, None), repeats)
        print(f"| {channels}->{out_channels} @{size} | {im2col * 1e3:.1f} | {fast * 1e3:.1f} | "
              f"{im2col / fast:.2f} | {error_im2col:.1e} / {error_winograd:.1e} |")


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
    times = {(name, method): [] for name in cases for method in ("im2col", "winograd")}

    def timed(name: str, method: str) -> None:
        paths = WINOGRAD_PATHS if method == "im2col" else ()
        with registry.without(*paths):
            time.sleep(0.3)
            start = time.perf_counter()
            cases[name]()
            times[name, method].append(time.perf_counter() - start)

    for name in cases:  # warm-up: compilation, allocator
        timed(name, "im2col"), timed(name, "winograd")
    for key in times:
        times[key].clear()
    for round_ in range(rounds):
        for name in cases:
            for method in (("im2col", "winograd") if round_ % 2 == 0
                           else ("winograd", "im2col")):
                timed(name, method)
    print("| work | im2col ms | Winograd ms | speedup |\n| --- | ---: | ---: | ---: |")
    for name in cases:
        im2col, fast = (statistics.median(times[name, m]) for m in ("im2col", "winograd"))
        print(f"| {name} | {im2col * 1e3:.0f} | {fast * 1e3:.0f} | {im2col / fast:.2f} |")


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
