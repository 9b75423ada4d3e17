"""The DDPM UNet: timestep embedding, residual blocks, self-attention, skip connections.

One configurable class; named presets (`mnist-tiny`, `mnist-small`) are its settings. The
layout follows Ho et al. (2020) as spelled out in shared/specs/mnist-tiny-unet.md:

    conv_in -> [ResBlock x num_res_blocks (+Attn) -> Downsample] per level -> mid
    -> [concat skip -> ResBlock (+Attn)] x (num_res_blocks + 1) -> Upsample, per level
    -> GroupNorm -> SiLU -> conv_out
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
    (index num_classes) for classifier-free guidance."""

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


def _norm_silu(norm: nn.GroupNorm, x: Tensor) -> Tensor:
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
        h = self.conv1(_norm_silu(self.norm1, x))
        h = h + self.embed_proj(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(_norm_silu(self.norm2, h)))
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
        if config.num_classes is not None:
            self.class_embedding = nn.Embedding(config.num_classes + 1, embed_dim)
        self.conv_in = nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)

        def attention(level: int, c: int) -> nn.Module:
            return (nn.SelfAttention2d(c, num_heads=config.attention_heads, norm_groups=groups)
                    if level in config.attention_levels else nn.Identity())

        skip_channels, current = [config.base_channels], config.base_channels
        self.down, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for level, c in enumerate(channels):
            blocks = Level()
            for _ in range(config.num_res_blocks):
                blocks.res_blocks.append(ResBlock(current, c, embed_dim, groups, dropout))
                blocks.attentions.append(attention(level, c))
                current = c
                skip_channels.append(c)
            self.down.append(blocks)
            if level < len(channels) - 1:
                self.downsamples.append(Downsample(c))
                skip_channels.append(c)

        self.mid_block1 = ResBlock(current, current, embed_dim, groups, dropout)
        self.mid_attention = nn.SelfAttention2d(current, num_heads=config.attention_heads,
                                                norm_groups=groups)
        self.mid_block2 = ResBlock(current, current, embed_dim, groups, dropout)

        self.up, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            blocks = Level()
            for _ in range(config.num_res_blocks + 1):
                incoming = current + skip_channels.pop()
                blocks.res_blocks.append(ResBlock(incoming, c, embed_dim, groups, dropout))
                blocks.attentions.append(attention(level, c))
                current = c
            self.up.append(blocks)
            if level > 0:
                self.upsamples.append(Upsample(c))

        self.norm_out = nn.GroupNorm(groups, current)
        self.conv_out = nn.Conv2d(current, config.out_channels, 3, padding=1)

    def embed(self, t, class_labels=None) -> Tensor:
        """The (N, 4 * base_channels) conditioning vector for timesteps and labels."""
        t = np.asarray(t.numpy() if isinstance(t, Tensor) else t)
        features = timestep_embedding(t, self.config.time_embed_dim,
                                      dtype=self.conv_in.weight.dtype)
        embedding = self.time_mlp(Tensor(features))
        if self.config.num_classes is not None:
            if class_labels is None:  # unconditional: the null label
                class_labels = np.full(t.shape, self.config.num_classes, dtype=np.int64)
            labels = np.asarray(class_labels.numpy() if isinstance(class_labels, Tensor)
                                else class_labels, dtype=np.int64)
            embedding = embedding + self.class_embedding(labels)
        elif class_labels is not None:
            raise ValueError("this UNet has no class conditioning (num_classes is None)")
        return embedding

    def forward(self, x, t, class_labels=None, observe=None) -> Tensor:
        """`observe(name, h)`, when given, is called with every block's output (for
        inspection, e.g. examples/unet_shapes.py)."""
        x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
        self._check_input(x, t)
        observe = observe or (lambda name, h: None)
        embedding = self.embed(t, class_labels)
        observe("time embedding", embedding)
        h = self.conv_in(x)
        observe("conv_in", h)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for i, (block, attention) in enumerate(zip(blocks.res_blocks, blocks.attentions)):
                h = attention(block(h, embedding))
                observe(f"down{level}.block{i}", h)
                skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
                observe(f"down{level}.downsample", h)
                skips.append(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, embedding)), embedding)
        observe("mid", h)
        for index, blocks in enumerate(self.up):
            for i, (block, attention) in enumerate(zip(blocks.res_blocks, blocks.attentions)):
                skip = skips.pop()
                h = attention(block(autograd.cat([h, skip], dim=1), embedding))
                observe(f"up{index}.block{i}", h)
            if index < len(self.upsamples):
                h = self.upsamples[index](h)
                observe(f"up{index}.upsample", h)
        out = self.conv_out(_norm_silu(self.norm_out, h))
        observe("conv_out", out)
        return out

    def _check_input(self, x: Tensor, t) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"UNet expects x of shape (N, {self.config.in_channels}, H, W), "
                             f"got {x.shape}")
        factor = 2 ** (len(self.config.channel_mult) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"UNet with {len(self.config.channel_mult)} levels needs H and W "
                             f"divisible by {factor}, got {x.shape[2:]}")
        t_shape = np.shape(t.numpy() if isinstance(t, Tensor) else t)
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
           "timestep_embedding", "ResBlock", "Downsample", "Upsample"]
