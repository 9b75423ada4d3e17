"""The DDPM UNet: timestep embedding, residual blocks, self-attention, skip connections.

One configurable class; named presets (`mnist-tiny`, `mnist-small`) are its settings. The
layout follows Ho et al. (2020) as spelled out in shared/specs/mnist-tiny-unet.md:

    conv_in -> [ResBlock x num_res_blocks (+Attn) -> Downsample] per level -> mid
    -> [concat skip -> ResBlock (+Attn)] x (num_res_blocks + 1) -> Upsample, per level
    -> GroupNorm -> SiLU -> conv_out

With `context_dim` set, the class label is a learned sequence of `context_tokens` vectors
that every attention block (and the mid block's) is followed by cross-attention to, as in
latent diffusion (Rombach et al. 2022), instead of a vector added to the time embedding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

import autograd
from autograd import nn
from autograd.nn import functional as F
from autograd.tensor import Tensor


@dataclass(frozen=True)
class UNetConfig:
    """Settings of the UNet. `attention_levels` are indices into `channel_mult` (0 = full
    resolution). `num_classes` enables class conditioning with one extra null label
    (index num_classes) for classifier-free guidance. `context_dim` (needs num_classes)
    conditions through cross-attention to a learned (context_tokens, context_dim) label
    sequence instead of adding a label vector to the time embedding."""

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    attention_heads: int = 1
    time_embed_dim: int = 32  # sinusoidal features; the MLP maps them to 4 * base_channels
    dropout: float = 0.0
    norm_groups: int = 8
    num_classes: int | None = None
    image_size: int = 28
    context_dim: int | None = None
    context_tokens: int = 4

    def __post_init__(self) -> None:
        if self.context_dim is not None and (self.num_classes is None or self.context_dim < 1
                                             or self.context_tokens < 1):
            raise ValueError(f"cross-attention conditioning needs num_classes and positive "
                             f"context_dim and context_tokens; got num_classes="
                             f"{self.num_classes}, context_dim={self.context_dim}, "
                             f"context_tokens={self.context_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> UNetConfig:
        config = dict(config)
        for key in ("channel_mult", "attention_levels"):
            config[key] = tuple(config[key])
        return cls(**config)


PRESETS: dict[str, UNetConfig] = {
    "mnist-tiny": UNetConfig(),
    "mnist-small": UNetConfig(base_channels=48, attention_levels=(1, 2)),
    # A few thousand parameters: for tests and smoke runs, not for samples.
    "micro": UNetConfig(base_channels=8, num_res_blocks=1, norm_groups=4, time_embed_dim=8),
    # Latent diffusion on tinydiff.vae's (4, 8, 8) MNIST latents, labels by cross-attention.
    "latent-tiny": UNetConfig(in_channels=4, out_channels=4, channel_mult=(1, 2),
                              attention_levels=(1,), num_classes=10, image_size=8,
                              context_dim=32, context_tokens=4),
}


def preset(name: str, **overrides: Any) -> UNetConfig:
    """A named configuration, optionally with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def timestep_embedding(t: np.ndarray, dim: int, dtype=np.float32) -> np.ndarray:
    """Sinusoidal features of integer timesteps t (N,) -> (N, dim): dim/2 sines then dim/2
    cosines at frequencies exp(-ln(10000) * i / (dim/2 - 1))."""
    half = dim // 2
    frequencies = np.exp(-math.log(10000.0) * np.arange(half) / max(half - 1, 1))
    angles = np.asarray(t, dtype=np.float64)[:, None] * frequencies[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(dtype)


def norm_silu(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """F.silu(norm(x)), computed by the fused GroupNorm + SiLU kernel."""
    return F.group_norm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, + projected time embedding, GroupNorm -> SiLU ->
    dropout -> conv3x3, plus the (1x1-projected when channels change) input."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, groups: int,
                 dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed_proj = nn.Linear(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1)
                         if in_channels != out_channels else nn.Identity())

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(norm_silu(self.norm1, x))
        h = h + self.embed_proj(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(norm_silu(self.norm2, h)))
        return self.shortcut(x) + h


class Downsample(nn.Module):
    """Strided 3x3 convolution: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.Module):
    """The blocks of one resolution: res blocks, each optionally followed by attention."""

    def __init__(self) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList()
        self.attentions = nn.ModuleList()
        self.cross_attentions = nn.ModuleList()  # one per res block with context_dim set


class _NoContext(nn.Module):
    """Stands in for cross-attention at levels without attention: h passes unchanged."""

    def forward(self, h: Tensor, context: Tensor) -> Tensor:
        return h


class UNet(nn.Module):
    """model(x, t, class_labels=None): x (N, C, H, W) float, t (N,) integer timesteps,
    class_labels (N,) integers (num_classes = null label) -> (N, out_channels, H, W)."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        config = config or UNetConfig()
        self.config = config
        groups, dropout = config.norm_groups, config.dropout
        channels = [config.base_channels * m for m in config.channel_mult]
        embed_dim = 4 * config.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(config.time_embed_dim, embed_dim), nn.SiLU(),
                                      nn.Linear(embed_dim, embed_dim))
        if config.context_dim is not None:  # label -> (context_tokens, context_dim) sequence
            self.context_embedding = nn.Embedding(
                config.num_classes + 1, config.context_tokens * config.context_dim)
        elif config.num_classes is not None:
            self.class_embedding = nn.Embedding(config.num_classes + 1, embed_dim)
        self.conv_in = nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)

        def attention(level: int, c: int) -> nn.Module:
            return (nn.SelfAttention2d(c, num_heads=config.attention_heads, norm_groups=groups)
                    if level in config.attention_levels else nn.Identity())

        def cross_attention(level: int, c: int) -> nn.Module:
            return (nn.CrossAttention2d(c, config.context_dim, config.attention_heads, groups)
                    if level in config.attention_levels else _NoContext())

        skip_channels, current = [config.base_channels], config.base_channels
        self.down, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for level, c in enumerate(channels):
            blocks = Level()
            for _ in range(config.num_res_blocks):
                blocks.res_blocks.append(ResBlock(current, c, embed_dim, groups, dropout))
                blocks.attentions.append(attention(level, c))
                if config.context_dim is not None:
                    blocks.cross_attentions.append(cross_attention(level, c))
                current = c
                skip_channels.append(c)
            self.down.append(blocks)
            if level < len(channels) - 1:
                self.downsamples.append(Downsample(c))
                skip_channels.append(c)

        self.mid_block1 = ResBlock(current, current, embed_dim, groups, dropout)
        self.mid_attention = nn.SelfAttention2d(current, num_heads=config.attention_heads,
                                                norm_groups=groups)
        if config.context_dim is not None:
            self.mid_cross_attention = nn.CrossAttention2d(current, config.context_dim,
                                                           config.attention_heads, groups)
        self.mid_block2 = ResBlock(current, current, embed_dim, groups, dropout)

        self.up, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            blocks = Level()
            for _ in range(config.num_res_blocks + 1):
                incoming = current + skip_channels.pop()
                blocks.res_blocks.append(ResBlock(incoming, c, embed_dim, groups, dropout))
                blocks.attentions.append(attention(level, c))
                if config.context_dim is not None:
                    blocks.cross_attentions.append(cross_attention(level, c))
                current = c
            self.up.append(blocks)
            if level > 0:
                self.upsamples.append(Upsample(c))

        self.norm_out = nn.GroupNorm(groups, current)
        self.conv_out = nn.Conv2d(current, config.out_channels, 3, padding=1)

    def labels(self, t, class_labels=None) -> np.ndarray | None:
        """The int64 labels (N,) (the null label where none are given), or None for an
        unconditional UNet."""
        if self.config.num_classes is None:
            if class_labels is not None:
                raise ValueError("this UNet has no class conditioning (num_classes is None)")
            return None
        if class_labels is None:  # unconditional: the null label
            return np.full(np.shape(t), self.config.num_classes, dtype=np.int64)
        return np.asarray(class_labels.numpy() if isinstance(class_labels, Tensor)
                          else class_labels, dtype=np.int64)

    def embed(self, t, class_labels=None) -> Tensor:
        """The (N, 4 * base_channels) conditioning vector for timesteps (and labels, unless
        they condition through cross-attention)."""
        t = np.asarray(t.numpy() if isinstance(t, Tensor) else t)
        features = timestep_embedding(t, self.config.time_embed_dim,
                                      dtype=self.conv_in.weight.dtype)
        embedding = self.time_mlp(Tensor(features, device=self.device))
        labels = self.labels(t, class_labels)
        if labels is not None and self.config.context_dim is None:
            embedding = embedding + self.class_embedding(labels)
        return embedding

    def context(self, t, class_labels=None) -> Tensor | None:
        """The (N, context_tokens, context_dim) label sequence the cross-attention blocks
        attend to, or None without `context_dim`."""
        if self.config.context_dim is None:
            return None
        sequence = self.context_embedding(self.labels(np.asarray(t), class_labels))
        return sequence.reshape(-1, self.config.context_tokens, self.config.context_dim)

    @property
    def device(self):
        """The device of the UNet's parameters (move them with `.to(device)`)."""
        return self.conv_in.weight.device

    def forward(self, x, t, class_labels=None) -> Tensor:
        """x (N, C, H, W): a Tensor on the UNet's device, or an array (moved there); t (N,)
        and class_labels (N,): host int arrays. (To look at every block's output, register
        forward hooks, as examples/unet_shapes.py does.)"""
        x = x if isinstance(x, Tensor) else Tensor(x, device=self.device)
        self._check_input(x, t)
        embedding = self.embed(t, class_labels)
        context = self.context(t, class_labels)
        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for i, block in enumerate(blocks.res_blocks):
                h = self._attend(blocks, i, block(h, embedding), context)
                skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
                skips.append(h)
        h = self.mid_attention(self.mid_block1(h, embedding))
        if context is not None:
            h = self.mid_cross_attention(h, context)
        h = self.mid_block2(h, embedding)
        for index, blocks in enumerate(self.up):
            for i, block in enumerate(blocks.res_blocks):
                skip = skips.pop()
                h = self._attend(blocks, i, block(autograd.cat([h, skip], dim=1), embedding),
                                 context)
            if index < len(self.upsamples):
                h = self.upsamples[index](h)
        return self.conv_out(norm_silu(self.norm_out, h))

    @staticmethod
    def _attend(blocks: Level, i: int, h: Tensor, context: Tensor | None) -> Tensor:
        """h through the i-th res block's attention, then its cross-attention (if any)."""
        h = blocks.attentions[i](h)
        return h if context is None else blocks.cross_attentions[i](h, context)

    def _check_input(self, x: Tensor, t) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"UNet expects x of shape (N, {self.config.in_channels}, H, W), "
                             f"got {x.shape}")
        factor = 2 ** (len(self.config.channel_mult) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"UNet with {len(self.config.channel_mult)} levels needs H and W "
                             f"divisible by {factor}, got {x.shape[2:]}")
        t_shape = tuple(t.shape) if hasattr(t, "shape") else np.shape(t)
        if t_shape != (x.shape[0],):
            raise ValueError(f"UNet expects t of shape ({x.shape[0]},), got {t_shape}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(name_or_config: str | UNetConfig | dict, **overrides: Any) -> UNet:
    """A UNet from a preset name, a config, or a config dict (as stored in checkpoints)."""
    if isinstance(name_or_config, str):
        config = preset(name_or_config, **overrides)
    elif isinstance(name_or_config, dict):
        config = replace(UNetConfig.from_dict(name_or_config), **overrides)
    else:
        config = replace(name_or_config, **overrides)
    return UNet(config)


__all__ = ["UNetConfig", "UNet", "PRESETS", "preset", "build_model", "count_parameters",
           "timestep_embedding", "norm_silu", "ResBlock", "Downsample", "Upsample"]
