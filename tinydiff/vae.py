"""A small KL-regularised convolutional VAE for MNIST, the first stage of latent diffusion
(Rombach et al. 2022): images (N, 1, 28, 28) in [-1, 1] <-> latents (N, 4, 8, 8).

The encoder pads the 28x28 image with the background value (-1) to 32x32, so two stride-2
convolutions give an 8x8 latent that the latent UNet can halve once more; the decoder
mirrors it and crops back to 28x28:

    encoder: pad -> conv_in -> [ResBlock (-> stride-2 conv)] per level -> ResBlock
             -> GroupNorm -> SiLU -> conv_out -> (mean, logvar), each (N, 4, 8, 8)
    decoder: conv_in -> ResBlock -> [ResBlock (-> nearest x2 + conv)] per level, reversed
             -> GroupNorm -> SiLU -> conv_out -> crop

The loss is reconstruction + kl_weight * KL, both summed per image and averaged over the
batch: reconstruction = sum of squared errors over the pixels (a Gaussian likelihood with
fixed variance 1/2, up to a constant), KL = KL(N(mean, exp(logvar)) || N(0, I)).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import autograd
from autograd import nn, optim
from autograd.nn import functional as F
from autograd.tensor import Tensor
from tinydiff.data import BatchIterator
from tinydiff.models import Downsample, Upsample, norm_silu

VAE_FORMAT = "tinydiff-vae-v1"


@dataclass(frozen=True)
class VAEConfig:
    """Settings of the VAE. The image is padded to `padded_size` with `background`; each of
    the len(channel_mult) - 1 level changes halves it, so the latent is
    (latent_channels, padded_size / 2 ** (len(channel_mult) - 1)) squared."""

    in_channels: int = 1
    image_size: int = 28
    padded_size: int = 32
    background: float = -1.0
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4)
    latent_channels: int = 4
    norm_groups: int = 8

    def __post_init__(self) -> None:
        factor = 2 ** (len(self.channel_mult) - 1)
        padding = self.padded_size - self.image_size
        if padding < 0 or padding % 2 or self.padded_size % factor or not self.channel_mult:
            raise ValueError(
                f"VAEConfig: padded_size {self.padded_size} must be image_size "
                f"{self.image_size} plus an even margin and divisible by {factor} (one halving "
                f"per level after the first of channel_mult {self.channel_mult})")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.padded_size // 2 ** (len(self.channel_mult) - 1)
        return (self.latent_channels, size, size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> VAEConfig:
        config = dict(config)
        config["channel_mult"] = tuple(config["channel_mult"])
        return cls(**config)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus the (1x1-projected) input: the diffusion
    UNet's block without the time embedding."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1)
                         if in_channels != out_channels else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(norm_silu(self.norm1, x))
        return self.shortcut(x) + self.conv2(norm_silu(self.norm2, h))


class VAE(nn.Module):
    """encode(x (N, 1, 28, 28)) -> (mean, logvar), each (N, *latent_shape);
    decode(z (N, *latent_shape)) -> (N, 1, 28, 28); forward(x, generator) -> (reconstruction
    of a posterior sample, mean, logvar)."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        config = config or VAEConfig()
        self.config = config
        groups = config.norm_groups
        channels = [config.base_channels * m for m in config.channel_mult]
        last = len(channels) - 1

        self.encoder_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.encoder_blocks, self.downsamples = nn.ModuleList(), nn.ModuleList()
        current = channels[0]
        for level, c in enumerate(channels):
            self.encoder_blocks.append(ResBlock(current, c, groups))
            if level < last:
                self.downsamples.append(Downsample(c))
            current = c
        self.encoder_mid = ResBlock(current, current, groups)
        self.encoder_norm = nn.GroupNorm(groups, current)
        self.encoder_out = nn.Conv2d(current, 2 * config.latent_channels, 3, padding=1)

        self.decoder_in = nn.Conv2d(config.latent_channels, current, 3, padding=1)
        self.decoder_mid = ResBlock(current, current, groups)
        self.decoder_blocks, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            self.decoder_blocks.append(ResBlock(current, channels[level], groups))
            current = channels[level]
            if level > 0:
                self.upsamples.append(Upsample(current))
        self.decoder_norm = nn.GroupNorm(groups, current)
        self.decoder_out = nn.Conv2d(current, config.in_channels, 3, padding=1)

    @property
    def device(self):
        """The device of the VAE's parameters (move them with `.to(device)`)."""
        return self.encoder_in.weight.device

    def encode(self, x) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log-variance (clamped to [-30, 20], as Stable
        Diffusion's), each (N, *latent_shape); arrays are moved to the VAE's device."""
        x = x if isinstance(x, Tensor) else Tensor(x, device=self.device)
        config = self.config
        size = config.image_size
        if x.ndim != 4 or x.shape[1:] != (config.in_channels, size, size):
            raise ValueError(f"VAE.encode expects images (N, {config.in_channels}, {size}, "
                             f"{size}), got {x.shape}")
        margin = (config.padded_size - size) // 2
        h = self.encoder_in(F.pad(x, (margin,) * 4, value=config.background))
        for level, block in enumerate(self.encoder_blocks):
            h = block(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = self.encoder_out(norm_silu(self.encoder_norm, self.encoder_mid(h)))
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z) -> Tensor:
        """Images (N, in_channels, image_size, image_size) from latents (N, *latent_shape);
        not clipped to [-1, 1]; arrays are moved to the VAE's device."""
        z = z if isinstance(z, Tensor) else Tensor(z, device=self.device)
        if z.ndim != 4 or z.shape[1:] != self.config.latent_shape:
            expected = ", ".join(map(str, self.config.latent_shape))
            raise ValueError(f"VAE.decode expects latents (N, {expected}), got {z.shape}")
        h = self.decoder_mid(self.decoder_in(z))
        for level, block in enumerate(self.decoder_blocks):
            h = block(h)
            if level < len(self.upsamples):
                h = self.upsamples[level](h)
        h = self.decoder_out(norm_silu(self.decoder_norm, h))
        margin = (self.config.padded_size - self.config.image_size) // 2
        return h[:, :, margin:margin + self.config.image_size,
                 margin:margin + self.config.image_size]

    def forward(self, x, generator: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        mean, logvar = self.encode(x)
        return self.decode(sample_posterior(mean, logvar, generator)), mean, logvar


def sample_posterior(mean: Tensor, logvar: Tensor, generator: np.random.Generator) -> Tensor:
    """z = mean + exp(logvar / 2) * eps with eps ~ N(0, I) from `generator` (the
    reparameterisation: gradients flow to mean and logvar)."""
    eps = generator.standard_normal(mean.shape).astype(mean.dtype)
    return mean + (logvar * 0.5).exp() * Tensor(eps, device=mean.device)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example: (N, ...) -> (N,),
    0.5 * sum(mean^2 + exp(logvar) - 1 - logvar) over all but the first dim."""
    if mean.shape != logvar.shape or mean.ndim < 1:
        raise ValueError(f"kl_divergence: mean {mean.shape} and logvar {logvar.shape} must "
                         "have one shape (N, ...)")
    terms = mean * mean + logvar.exp() - 1.0 - logvar
    return terms.reshape(mean.shape[0], -1).sum(dim=1) * 0.5


def vae_loss(vae: VAE, images: np.ndarray, generator: np.random.Generator,
             kl_weight: float) -> tuple[Tensor, float, float]:
    """(loss, reconstruction, kl) on a batch: loss = reconstruction + kl_weight * kl, with
    reconstruction the per-image sum of squared errors and kl the per-image KL, both
    averaged over the batch."""
    x = Tensor(np.ascontiguousarray(images), device=vae.device)
    reconstruction, mean, logvar = vae(x, generator)
    squared = F.mse_loss(reconstruction, x, reduction="sum") / len(images)
    kl = kl_divergence(mean, logvar).mean()
    return squared + kl * kl_weight, squared.item(), kl.item()


def train_vae(images: np.ndarray, steps: int, batch_size: int = 32, lr: float = 2e-3,
              kl_weight: float = 1e-3, seed: int = 0, progress: bool = True,
              config: VAEConfig | None = None,
              device: str | None = None) -> tuple[VAE, dict[str, list[float]]]:
    """Train a VAE on images (N, 1, 28, 28) in [-1, 1] with AdamW, linear warm-up and cosine
    decay, on `device` (default the CPU); returns it in eval mode and the history {step,
    loss, reconstruction, kl, seconds}. Initialisation, batch order and posterior samples
    all follow `seed`."""
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1 or not lr > 0 or kl_weight < 0:
        raise ValueError(f"train_vae needs steps >= 1, batch_size >= 1, lr > 0 and "
                         f"kl_weight >= 0; got {steps}, {batch_size}, {lr}, {kl_weight}")
    autograd.manual_seed(seed)  # the layers' initialisation draws from it
    vae = VAE(config).to("cpu" if device is None else device)
    parameters = list(vae.parameters())
    optimizer = optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    schedule = optim.lr_scheduler.get_cosine_schedule_with_warmup(
        optimizer, min(100, steps // 10), steps)
    batches = BatchIterator(images, batch_size=batch_size, seed=seed, drop_last=True)
    generator = np.random.default_rng(seed + 1)  # posterior samples
    history: dict[str, list[float]] = {key: [] for key in
                                       ("step", "loss", "reconstruction", "kl", "seconds")}
    started = time.perf_counter()
    vae.train()
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="vae", unit="step"):
        x, _ = next(batches)
        loss, reconstruction, kl = vae_loss(vae, x, generator, kl_weight)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"the VAE loss became {loss.item()} at step {step}; try a "
                               "lower lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        for key, value in (("step", step), ("loss", loss.item()),
                           ("reconstruction", reconstruction), ("kl", kl),
                           ("seconds", time.perf_counter() - started)):
            history[key].append(value)
    return vae.eval(), history


def reconstruct(vae: VAE, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """decode(posterior mean) of images (N, 1, 28, 28), in batches, without a graph."""
    with autograd.no_grad():
        return np.concatenate([
            vae.decode(vae.encode(images[start:start + batch_size])[0]).cpu().numpy()
            for start in range(0, len(images), batch_size)])


def evaluate_vae(vae: VAE, images: np.ndarray, batch_size: int = 500) -> dict[str, float]:
    """On images (N, 1, 28, 28): "mse", the mean squared error per pixel of decode(posterior
    mean) in [-1, 1] units, and "kl_per_dim", the mean KL per image divided by the number of
    latent values."""
    squared, kl = 0.0, 0.0
    with autograd.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            mean, logvar = vae.encode(x)
            squared += float(np.sum((vae.decode(mean).cpu().numpy() - x) ** 2,
                                    dtype=np.float64))
            kl += float(np.sum(kl_divergence(mean, logvar).cpu().numpy(), dtype=np.float64))
    return {"mse": squared / images.size, "kl_per_dim": kl / len(images) / math.prod(
        vae.config.latent_shape)}


# ---- checkpoints --------------------------------------------------------------------------


def vae_state(vae: VAE) -> dict[str, Any]:
    """What identifies a trained VAE: format tag, config and weights (a dict for
    autograd.save, also embedded in latent-diffusion files)."""
    return {"format": VAE_FORMAT, "config": vae.config.to_dict(),
            "model": dict(vae.state_dict())}


def vae_from_state(state: Any, source: str = "the state") -> VAE:
    """The VAE (in eval mode) that `vae_state` described."""
    if not isinstance(state, dict) or state.get("format") != VAE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{source} is not a tinydiff VAE (format {VAE_FORMAT!r} expected, "
                         f"found {found!r})")
    vae = VAE(VAEConfig.from_dict(state["config"]))
    vae.load_state_dict(state["model"])
    return vae.eval()


def save_vae(vae: VAE, path: str | Path) -> Path:
    """Write the VAE to `path` (.npz) atomically (autograd.save)."""
    path = Path(path)
    autograd.save(vae_state(vae), path)
    return path


def load_vae(path: str | Path) -> VAE:
    """The VAE saved at `path` by `save_vae`, in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no VAE at {path}: train one with tinydiff.vae.train_vae "
                                "and save_vae (or examples/latent_diffusion.py)")
    return vae_from_state(autograd.load(path), str(path))


__all__ = ["VAEConfig", "VAE", "ResBlock", "kl_divergence", "sample_posterior", "vae_loss",
           "train_vae", "reconstruct", "evaluate_vae", "vae_state", "vae_from_state",
           "save_vae", "load_vae", "VAE_FORMAT"]
