"""Training and sampling speed of the mnist-tiny UNet on this machine.

    python benchmarks/bench_unet.py [--preset mnist-tiny] [--batch 64] [--steps 6]
                                    [--threads N] [--slices S] [--device cuda] [--profile]

Prints training images/s (a full DDPM step of the Trainer: forward, backward, clip, AdamW,
EMA; the batch in S slices on min(S, threads) worker threads, by default one per thread),
forward (sampling) images/s (the batch in one slice per thread, as sampling runs it; and
as one call), peak memory and page faults per step, and the achieved GFLOP/s (1.66 GFLOP
per image for a training step, 0.554 for a forward, convolutions and matrix products
only) as a fraction of the float32 matmul GFLOP/s that NumPy reaches in the same run
(with `--device cuda`: the UNet on the GPU, each step timed to the device's completion,
against CuPy's matmul rate; the batch then runs as one slice per call, the forward as one
call).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource

import numpy as np
from timing import matmul_rate, median_seconds, page_faults_per_call

import autograd
from autograd.backend import to_device
from autograd.nn.parallel import sliced_forward
from tinydiff.models import build_model, count_parameters
from tinydiff.training import TrainConfig, Trainer

TRAIN_GFLOP_PER_IMAGE = 1.66
FORWARD_GFLOP_PER_IMAGE = 0.554


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist-tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (median)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--slices", type=int, default=TrainConfig.batch_slices,
                        help="batch slices (TrainConfig.batch_slices; default: one per "
                        "thread; 1: one pass)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--profile", action="store_true",
                        help="print the top costs (cProfile sees the calling thread only: "
                        "use with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        autograd.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (args.batch * (args.steps + 2), 1, 28, 28)).astype(np.float32)
    config = TrainConfig(model=args.preset, batch_size=args.batch, steps=10**6,
                         batch_slices=args.slices)
    trainer = Trainer(config, images, np.zeros(len(images), np.int64), device=args.device)
    on_gpu = trainer.device.type == "cuda"
    synchronize = autograd.cuda.synchronize if on_gpu else lambda: None

    def timed(fn):
        return lambda: (fn(), synchronize())

    trainer.train_step()  # compile kernels, allocate optimizer state
    train_s = median_seconds(timed(trainer.train_step), args.steps)
    train_faults = page_faults_per_call(trainer.train_step, 2)

    model = build_model(args.preset).eval().to(args.device)
    x = to_device(images[: args.batch], args.device)
    t = np.full(args.batch, 500)
    # what sampling runs: on the CPU the batch in slices, one per thread; on a GPU one call
    sliced = sliced_forward(model)
    with autograd.no_grad():
        forward_s = median_seconds(timed(lambda: sliced(x, t)), args.steps)
        single_call_s = median_seconds(timed(lambda: model(x, t)), args.steps)
        forward_faults = page_faults_per_call(lambda: sliced(x, t), 2)
    # like the UNet's im2col products
    gemm = matmul_rate(64 * 14 * 14, 576, 64, 10, rng, device=args.device)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    train_rate, forward_rate = args.batch / train_s, args.batch / forward_s
    train_gflops = train_rate * TRAIN_GFLOP_PER_IMAGE
    forward_gflops = forward_rate * FORWARD_GFLOP_PER_IMAGE
    print(f"{args.preset}: {count_parameters(model):,} parameters, batch {args.batch}, "
          f"threads {autograd.get_num_threads()}, training in {trainer.config.batch_slices} "
          f"slice(s) on {trainer.device}")
    print(f"{'cupy' if on_gpu else 'numpy'} float32 matmul: {gemm:.1f} GFLOP/s")
    print(f"{'':<10}{'s/batch':>9}{'img/s':>9}{'GFLOP/s':>9}{'of matmul':>11}")
    print(f"{'train':<10}{train_s:>9.3f}{train_rate:>9.1f}{train_gflops:>9.1f}"
          f"{train_gflops / gemm:>11.2f}")
    print(f"{'forward':<10}{forward_s:>9.3f}{forward_rate:>9.1f}{forward_gflops:>9.1f}"
          f"{forward_gflops / gemm:>11.2f}")
    single_gflops = args.batch / single_call_s * FORWARD_GFLOP_PER_IMAGE
    print(f"{'(1 call)':<10}{single_call_s:>9.3f}{args.batch / single_call_s:>9.1f}"
          f"{single_gflops:>9.1f}{single_gflops / gemm:>11.2f}")
    print(f"peak memory (max RSS): {peak_mib:.0f} MiB; page faults per train step "
          f"{train_faults:.0f}, per forward {forward_faults:.0f} (malloc keeps freed memory: "
          f"{autograd.memory.KEEPS_FREED_MEMORY})")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [trainer.train_step() for _ in range(3)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
