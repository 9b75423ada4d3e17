"""Latent diffusion (Rombach et al. 2022): a diffusion UNet trained on a VAE's latents.

    vae = load_vae("vae.npz")
    trainer = latent_trainer(vae, images, labels, TrainConfig(model="latent-tiny"), "run")
    trainer.train("run")                      # run/ckpt.npz, as any diffusion run
    pipeline = load_latent_pipeline("run/ckpt.npz")
    images = sample_latent_images(pipeline, labels=np.arange(10), seed=0)

The training set is encoded once to its posterior means (deterministic, so a resumed run
re-encodes exactly the same latents) and multiplied by scale_factor = 1 / std(latents),
Stable Diffusion's `scaling_factor`, so the diffusion sees data of unit variance. The
diffusion checkpoint is an ordinary tinydiff checkpoint; the VAE (config and weights) and
the scale factor live in a sidecar file beside it, `latent.npz`, written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import autograd
from tinydiff.models import UNet, build_model
from tinydiff.samplers import DEFAULT_GUIDANCE, class_guidance, sample
from tinydiff.schedules import NoiseSchedule
from tinydiff.training import TrainConfig, Trainer, load_for_sampling, read_tagged_file
from tinydiff.vae import VAE, vae_from_state, vae_state

LATENT_FORMAT = "tinydiff-latent-v1"
SIDECAR = "latent.npz"


def encode_dataset(vae: VAE, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The posterior means (N, *latent_shape) float32 of images (N, 1, 28, 28), in batches,
    without a graph."""
    with autograd.no_grad():
        return np.concatenate([vae.encode(images[start:start + batch_size])[0].cpu().numpy()
                               for start in range(0, len(images), batch_size)])


def latent_scale_factor(latents: np.ndarray) -> float:
    """1 / std of all latent values (Stable Diffusion's scaling_factor)."""
    std = float(np.std(latents, dtype=np.float64))
    if not std > 0:
        raise ValueError(f"the latents have standard deviation {std}: cannot scale them")
    return 1.0 / std


def sidecar_path(checkpoint: str | Path) -> Path:
    """Where the VAE and scale factor of the latent run that writes `checkpoint` live."""
    return Path(checkpoint).parent / SIDECAR


def save_sidecar(vae: VAE, scale_factor: float, out_dir: str | Path) -> Path:
    """Write out_dir/latent.npz (atomically): the VAE's config and weights, the scale factor."""
    path = Path(out_dir) / SIDECAR
    autograd.save({"format": LATENT_FORMAT, "vae": vae_state(vae),
                   "scale_factor": float(scale_factor), "encoding": "posterior mean"}, path)
    return path


def read_sidecar(checkpoint: str | Path) -> tuple[VAE, float]:
    """(VAE in eval mode, scale factor) stored beside the diffusion `checkpoint`."""
    path = sidecar_path(checkpoint)
    state = read_tagged_file(path, LATENT_FORMAT, "latent-diffusion file",
                             f"{checkpoint} is not a latent diffusion run (train one with "
                             "`tinydiff train --vae` or tinydiff.latent.latent_trainer)")
    return vae_from_state(state["vae"], f"the VAE in {path}"), float(state["scale_factor"])


def scaled_latents(vae: VAE, images: np.ndarray, scale_factor: float | None = None,
                   batch_size: int = 500) -> tuple[np.ndarray, float]:
    """(encode_dataset(images) * scale_factor, scale_factor); the factor is computed from
    these latents unless given."""
    latents = encode_dataset(vae, images, batch_size)
    scale_factor = latent_scale_factor(latents) if scale_factor is None else scale_factor
    return latents * np.float32(scale_factor), float(scale_factor)


def latent_trainer(vae: VAE, images: np.ndarray, labels: np.ndarray | None,
                   config: TrainConfig, out_dir: str | Path, device: str | None = None,
                   encoded: tuple[np.ndarray, float] | None = None,
                   **model_overrides: Any) -> Trainer:
    """A `Trainer` of the `config.model` UNet (sized to the VAE's latents) on the scaled
    latents of `images`, on `device` (the VAE encodes there too); writes out_dir/latent.npz
    now. Call `.train(out_dir)` next. `encoded`: `scaled_latents(vae, images)` if already
    computed (e.g. for a time budget's probe trainer), not encoded again."""
    vae = vae.to("cpu" if device is None else device)
    latents, scale_factor = scaled_latents(vae, images) if encoded is None else encoded
    channels, size, _ = vae.config.latent_shape
    autograd.manual_seed(config.seed)  # as Trainer does, so the UNet's init follows the seed
    model = build_model(config.model, in_channels=channels, out_channels=channels,
                        image_size=size,
                        num_classes=10 if config.class_conditional else None, **model_overrides)
    trainer = Trainer(config, images=latents, labels=labels, model=model, device=device)
    save_sidecar(vae, scale_factor, out_dir)
    return trainer


def resume_latent_trainer(checkpoint: str | Path, images: np.ndarray,
                          labels: np.ndarray | None, device: str | None = None,
                          **overrides: Any) -> Trainer:
    """`Trainer.resume` of a latent run on `device`: re-encodes `images` (the same training
    images) with the stored VAE and scale factor; `overrides` may change e.g. `steps`."""
    vae, scale_factor = read_sidecar(checkpoint)
    latents, _ = scaled_latents(vae.to("cpu" if device is None else device), images,
                                scale_factor)
    return Trainer.resume(checkpoint, latents, labels, device=device, **overrides)


@dataclass
class LatentPipeline:
    """Everything sampling needs: the latent UNet (eval mode, EMA weights), its schedule and
    prediction type, the VAE and the scale factor."""

    model: UNet
    schedule: NoiseSchedule
    prediction_type: str
    vae: VAE
    scale_factor: float


def load_latent_pipeline(checkpoint: str | Path, use_ema: bool = True,
                         device: str | None = None) -> LatentPipeline:
    """The pipeline of the latent run whose diffusion checkpoint is `checkpoint`, with the
    UNet and the VAE on `device` (default the CPU)."""
    vae, scale_factor = read_sidecar(checkpoint)
    model, schedule, prediction_type, _ = load_for_sampling(checkpoint, use_ema=use_ema,
                                                            device=device)
    return LatentPipeline(model, schedule, prediction_type, vae.to(model.device),
                          scale_factor)


def decode_latents(pipeline: LatentPipeline, latents: np.ndarray,
                   batch_size: int = 500) -> np.ndarray:
    """Images in [-1, 1] (N, 1, 28, 28) from scaled latents (N, *latent_shape)."""
    unscaled = latents / np.float32(pipeline.scale_factor)
    with autograd.no_grad():
        images = np.concatenate([pipeline.vae.decode(unscaled[start:start + batch_size])
                                 .cpu().numpy() for start in range(0, len(unscaled),
                                                                   batch_size)])
    return np.clip(images, -1.0, 1.0)


def sample_latent_images(pipeline: LatentPipeline, labels: np.ndarray | None = None,
                         count: int | None = None,
                         guidance_scale: float | None = DEFAULT_GUIDANCE,
                         sampler: str = "ddim", num_inference_steps: int | None = 50,
                         seed: int | None = None,
                         generator: np.random.Generator | None = None,
                         **options: Any) -> np.ndarray:
    """Sample scaled latents with `tinydiff.samplers.sample` (classifier-free guidance
    towards `labels` (N,) via `class_guidance`; `count` samples when unconditional),
    then decode: images (N, 1, 28, 28) in [-1, 1]. Latents are not clipped (clip_sample
    False unless given in `options`); other `options` go to `sample`."""
    if (labels is None) == (count is None):
        given = "both" if labels is not None else "neither"
        raise ValueError(f"sample_latent_images needs labels (N,) or a count, not {given}")
    count = len(labels) if labels is not None else count
    model = pipeline.model
    if options.get("thresholding") or options.get("clip_sample"):
        raise ValueError("thresholding / clip_sample clip x0 to the pixel range [-1, 1]; "
                         "latents are not in it: leave them off for latent models")
    if sampler in ("ddpm", "ddim"):
        options.setdefault("clip_sample", False)
    with autograd.no_grad():
        latents = sample(model, pipeline.schedule, (count, *pipeline.vae.config.latent_shape),
                         sampler=sampler, num_inference_steps=num_inference_steps,
                         seed=seed, generator=generator,
                         prediction_type=pipeline.prediction_type,
                         **options, **class_guidance(model, labels, guidance_scale))
    return decode_latents(pipeline, latents)


__all__ = ["encode_dataset", "latent_scale_factor", "scaled_latents", "latent_trainer",
           "resume_latent_trainer", "save_sidecar", "read_sidecar", "sidecar_path",
           "LatentPipeline", "load_latent_pipeline", "decode_latents", "sample_latent_images",
           "LATENT_FORMAT"]
