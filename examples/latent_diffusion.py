"""Latent diffusion on MNIST: a VAE, then a class-conditional UNet on its latents.

    python examples/latent_diffusion.py [--vae runs/latent/vae.npz] [--ckpt runs/latent/ckpt.npz]
        [--vae-steps 600] [--unet-steps 2500] [--out-dir runs/latent]
        [--pixel-ckpt runs/default/ckpt.npz]

Without --vae it trains the VAE (images 28x28 -> latents 4x8x8, a 3x smaller space) and
saves it; without --ckpt it trains the latent-tiny UNet on the scaled latents, where the
label reaches the UNet through cross-attention to a learned label sequence. It writes
(a) test images beside their reconstructions, with the test-set reconstruction MSE, and
(b) guided samples of the digits 0..9 in turn, then prints the time per sample of latent
sampling (decoding included) against pixel-space sampling with the pixel checkpoint, at
the same sampler, steps, guidance and batch size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import autograd
from tinydiff.data import load_mnist
from tinydiff.latent import latent_trainer, load_latent_pipeline, sample_latent_images
from tinydiff.plots import plot_labelled_rows, save_image_grid
from tinydiff.samplers import class_guidance, sample
from tinydiff.training import TrainConfig, load_for_sampling
from tinydiff.vae import evaluate_vae, load_vae, reconstruct, save_vae, train_vae


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, help="a trained VAE (default: train one)")
    parser.add_argument("--ckpt", type=Path, help="a latent diffusion checkpoint (default: "
                        "train one; its latent.npz must lie beside it)")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/latent"))
    parser.add_argument("--vae-steps", type=int, default=600)
    parser.add_argument("--vae-batch-size", type=int, default=32)
    parser.add_argument("--kl-weight", type=float, default=1e-3)
    parser.add_argument("--unet-steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="latent-tiny")
    parser.add_argument("--train-limit", type=int, help="use the first N training images")
    parser.add_argument("--test-limit", type=int, help="score on the first N test images")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--pixel-ckpt", type=Path, default=Path("runs/default/ckpt.npz"))
    parser.add_argument("--timing-samples", type=int, default=20,
                        help="samples per timed batch, latent and pixel alike")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recon-out", type=Path)
    parser.add_argument("--samples-out", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        autograd.set_num_threads(args.threads)
    out = args.out_dir

    test_images, _ = load_mnist("test", limit=args.test_limit)
    if args.vae is None or args.ckpt is None:
        train_images, train_labels = load_mnist("train", limit=args.train_limit)
    if args.vae is not None:
        vae = load_vae(args.vae)
    else:
        started = time.perf_counter()
        vae, history = train_vae(train_images, args.vae_steps, args.vae_batch_size,
                                 kl_weight=args.kl_weight, seed=args.seed)
        print(f"VAE: {args.vae_steps} steps of {args.vae_batch_size} images in "
              f"{time.perf_counter() - started:.0f} s; saved {save_vae(vae, out / 'vae.npz')}")
    scores = evaluate_vae(vae, test_images)
    print(f"VAE on {len(test_images)} test images: reconstruction MSE {scores['mse']:.4f} per "
          f"pixel ([-1, 1] units), KL {scores['kl_per_dim']:.3f} nats per latent value")
    shown = test_images[:12]
    recon_path = plot_labelled_rows(
        {"original": shown, "reconstruction": reconstruct(vae, shown)},
        args.recon_out or out / "vae-reconstructions.png",
        title=f"VAE, latent {'x'.join(map(str, vae.config.latent_shape))}: test MSE "
              f"{scores['mse']:.4f} per pixel ({len(test_images)} images, [-1, 1] units)")
    print(f"saved {recon_path}")

    checkpoint = args.ckpt
    if checkpoint is None:
        config = TrainConfig(model=args.preset, steps=args.unet_steps,
                             batch_size=args.batch_size, batch_slices=1, seed=args.seed)
        trainer = latent_trainer(vae, train_images, train_labels, config, out)
        started = time.perf_counter()
        checkpoint = trainer.train(out)
        losses = trainer.history["loss"]
        print(f"latent UNet: {config.steps} steps of {config.batch_size} in "
              f"{time.perf_counter() - started:.0f} s; loss {losses[0]:.3f} -> "
              f"{np.mean(losses[-20:]):.3f} (mean of the last 20)")
    pipeline = load_latent_pipeline(checkpoint)

    labels = np.arange(args.samples) % 10
    images = sample_latent_images(pipeline, labels, guidance_scale=args.guidance,
                                  num_inference_steps=args.sample_steps, seed=args.seed)
    samples_path = save_image_grid(images, args.samples_out or out / "latent-samples.png",
                                   nrow=10)
    print(f"saved {samples_path}")
    compare_speed(pipeline, args)
    return samples_path


def compare_speed(pipeline, args) -> None:
    """Seconds per sample, latent (with decoding) and pixel space, measured alternately."""
    if not args.pixel_ckpt.exists():
        print(f"no pixel checkpoint at {args.pixel_ckpt}: speed comparison skipped")
        return
    model, schedule, prediction_type, _ = load_for_sampling(args.pixel_ckpt)
    labels = np.arange(args.timing_samples) % 10

    def latent():
        sample_latent_images(pipeline, labels, guidance_scale=args.guidance,
                             num_inference_steps=args.sample_steps, seed=args.seed)

    def pixel():
        with autograd.no_grad():
            sample(model, schedule, (len(labels), 1, 28, 28), num_inference_steps=args.sample_steps,
                   seed=args.seed, prediction_type=prediction_type,
                   **class_guidance(model, labels, args.guidance))

    seconds = {"latent": 0.0, "pixel": 0.0}
    for _ in range(2):  # alternate, so both see the same machine load
        for name, run in (("latent", latent), ("pixel", pixel)):
            started = time.perf_counter()
            run()
            seconds[name] += time.perf_counter() - started
    latent_s, pixel_s = (seconds[k] / (2 * len(labels)) for k in ("latent", "pixel"))
    print(f"DDIM {args.sample_steps} steps, guidance {args.guidance:g}, batch {len(labels)}: "
          f"latent {latent_s:.4f} s/sample, pixel {pixel_s:.4f} s/sample "
          f"({pixel_s / latent_s:.1f}x faster in latent space)")


if __name__ == "__main__":
    main()
