"""Attention layers: `MultiheadAttention` (PyTorch's parameter layout), `SelfAttention2d`,
the UNet's attention block over the H * W positions of an NCHW feature map, and
`CrossAttention2d`, where those positions attend to a context sequence instead."""

from __future__ import annotations

import numpy as np

from autograd import ops
from autograd.backend import get_array_module, on_device
from autograd.nn import functional as F
from autograd.nn import init
from autograd.nn.linear import Linear
from autograd.nn.module import Module, Parameter
from autograd.nn.normalization import GroupNorm
from autograd.tensor import Tensor, default_dtype


def _split_heads(x: Tensor, batch: int, tokens: int, heads: int) -> Tensor:
    """(batch * tokens, heads * d) -> (batch, heads, tokens, d)."""
    return x.reshape(batch, tokens, heads, -1).permute(0, 2, 1, 3)


def _merge_heads(x: Tensor) -> Tensor:
    """(batch, heads, tokens, d) -> (batch * tokens, heads * d)."""
    batch, heads, tokens, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch * tokens, heads * d)


def causal_mask(length: int, source: int, like: Tensor):
    """(L, S) additive mask on `like`'s device, in its dtype: 0 where key j <= query i,
    -inf above the diagonal."""
    xp = get_array_module(like.data)
    with on_device(like.device):
        allowed = xp.tril(xp.ones((length, source), dtype=bool))
        return xp.where(allowed, 0.0, -np.inf).astype(like.dtype)


class MultiheadAttention(Module):
    """PyTorch's nn.MultiheadAttention (kdim = vdim = embed_dim): in_proj_weight (3E, E)
    Xavier-uniform, in_proj_bias (3E,) zeros, out_proj Linear(E, E) with zero bias.

    forward(query (N, L, E), key (N, S, E), value (N, S, E)) -> (output (N, L, E),
    weights (N, L, S) averaged over heads, or (N, heads, L, S), or None). As in PyTorch, a
    boolean attn_mask (L, S) or (N * heads, L, S) and key_padding_mask (N, S) are True
    where attention is NOT allowed; a float attn_mask is added to the scores (masks are
    constants here: no gradient). is_causal without attn_mask applies the causal mask.
    A query with every key masked gets NaN weights with need_weights=True (as PyTorch) and
    a zero output with need_weights=False (see F.scaled_dot_product_attention).
    By default (batch_first=False, as PyTorch) inputs are (L, N, E); batch_first=True
    takes (N, L, E)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, dtype=None,
                 generator: np.random.Generator | None = None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.batch_first, self.generator = batch_first, generator
        dtype = dtype or default_dtype
        self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype)) if bias else None
        if not bias:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype, generator=generator)
        init.xavier_uniform_(self.in_proj_weight, generator=generator)
        if bias:
            init.zeros_(self.out_proj.bias)

    def _additive_mask(self, attn_mask, key_padding_mask, batch: int, length: int,
                       source: int, like: Tensor) -> Tensor | None:
        """Both masks as one constant float mask (N or 1, heads or 1, L, S) on `like`'s
        device and in its dtype, -inf where attention is not allowed."""
        mask = None
        for values, padding in ((attn_mask, False), (key_padding_mask, True)):
            if values is None:
                continue
            values = F.as_constant(like, values, "attention mask")
            if padding:
                shape = (batch, 1, 1, source)
            elif values.ndim == 2:
                shape = (1, 1, length, source)
            else:
                shape = (batch, self.num_heads, length, source)
            if values.dtype == np.bool_:
                values = get_array_module(values).where(values, -np.inf, 0.0)
            values = values.astype(like.dtype).reshape(shape)
            mask = values if mask is None else mask + values
        return None if mask is None else Tensor._wrap(mask)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query.ndim != 3 or key.shape != value.shape or key.ndim != 3 or \
                query.shape[-1] != self.embed_dim or key.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention expects query (N, L, {self.embed_dim}) and "
                             f"key, value (N, S, {self.embed_dim}); got {query.shape}, "
                             f"{key.shape}, {value.shape}")
        batch, length, embed = query.shape
        source = key.shape[1]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        q = _split_heads(F.linear(query.reshape(-1, embed), w_q, b_q), batch, length,
                         self.num_heads)
        k = _split_heads(F.linear(key.reshape(-1, embed), w_k, b_k), batch, source,
                         self.num_heads)
        v = _split_heads(F.linear(value.reshape(-1, embed), w_v, b_v), batch, source,
                         self.num_heads)
        mask = self._additive_mask(attn_mask, key_padding_mask, batch, length, source, query)
        if is_causal and mask is None:
            mask = Tensor._wrap(causal_mask(length, source, query))
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-1, -2)) * (1.0 / np.sqrt(q.shape[-1]))
            probs = ops.softmax(scores if mask is None else scores + mask, -1)
            probs = F.dropout(probs, p, True, self.generator)
            attended = probs @ v
            weights = probs.mean(dim=1) if average_attn_weights else probs
        else:
            attended = F.scaled_dot_product_attention(q, k, v, mask, p,
                                                      generator=self.generator)
        out = self.out_proj(_merge_heads(attended)).reshape(batch, length, embed)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


class _PointwiseConv(Module):
    """A 1x1 convolution's parameters, weight (out, in, 1, 1) and bias (out,), with PyTorch's
    Conv2d init; applied as a matrix product over channels of (tokens, in) rows."""

    def __init__(self, in_channels: int, out_channels: int, dtype=None,
                 generator: np.random.Generator | None = None) -> None:
        super().__init__()
        dtype = dtype or default_dtype
        self.weight = Parameter(np.empty((out_channels, in_channels, 1, 1), dtype))
        self.bias = Parameter(np.empty(out_channels, dtype))
        init.default_layer_init_(self.weight, self.bias, generator=generator)

    def forward(self, rows: Tensor) -> Tensor:  # (tokens, in) -> (tokens, out)
        return F.linear(rows, self.weight.reshape(self.weight.shape[:2]), self.bias)


def _pixel_rows(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N * H * W, C): one row of channels per position."""
    batch, channels, height, width = x.shape
    return x.reshape(batch, channels, height * width).transpose(1, 2).reshape(-1, channels)


def _feature_map(rows: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The inverse of `_pixel_rows`: (N * H * W, C) -> (N, C, H, W) of `shape`."""
    batch, channels, height, width = shape
    return rows.reshape(batch, height * width, channels).transpose(1, 2).reshape(shape)


class SelfAttention2d(Module):
    """The UNet's attention block on x (N, C, H, W), attending over the H * W positions:

        h = GroupNorm(norm_groups, C)(x);  q, k, v = split(Conv1x1(C, 3C)(h))
        h = softmax(q^T k / sqrt(C / heads)) applied to v, per head
        return x + Conv1x1(C, C)(h)

    Parameters: norm.weight/bias (C,), qkv.weight (3C, C, 1, 1), qkv.bias (3C,),
    proj.weight (C, C, 1, 1), proj.bias (C,)."""

    def __init__(self, channels: int, num_heads: int = 1, norm_groups: int = 8, dtype=None,
                 generator: np.random.Generator | None = None) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} are not divisible by num_heads {num_heads}")
        self.channels, self.num_heads = channels, num_heads
        self.norm = GroupNorm(norm_groups, channels, dtype=dtype)
        self.qkv = _PointwiseConv(channels, 3 * channels, dtype, generator)
        self.proj = _PointwiseConv(channels, channels, dtype, generator)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"SelfAttention2d expects input (N, {self.channels}, H, W), got "
                             f"{x.shape}")
        batch, channels, height, width = x.shape
        tokens = height * width
        qkv = self.qkv(_pixel_rows(self.norm(x)))  # (N * HW, 3C)
        q, k, v = (_split_heads(part, batch, tokens, self.num_heads)
                   for part in qkv.chunk(3, dim=1))
        attended = _merge_heads(F.scaled_dot_product_attention(q, k, v))  # (N * HW, C)
        return x + _feature_map(self.proj(attended), x.shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, num_heads={self.num_heads}"


class CrossAttention2d(Module):
    """Cross-attention from the H * W positions of x (N, C, H, W) to a context sequence
    (N, L, context_dim), as in latent diffusion (Rombach et al. 2022):

        h = GroupNorm(norm_groups, C)(x);  q = Conv1x1(C, C)(h)
        k, v = split(Linear(context_dim, 2C)(context))
        h = softmax(q^T k / sqrt(C / heads)) applied to v, per head
        return x + Conv1x1(C, C)(h)

    Parameters: norm.weight/bias (C,), q.weight (C, C, 1, 1), q.bias (C,),
    kv.weight (2C, context_dim), kv.bias (2C,), proj.weight (C, C, 1, 1), proj.bias (C,).
    Initialised as SelfAttention2d (PyTorch's defaults; the output is not zeroed)."""

    def __init__(self, channels: int, context_dim: int, num_heads: int = 1,
                 norm_groups: int = 8, dtype=None,
                 generator: np.random.Generator | None = None) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} are not divisible by num_heads {num_heads}")
        self.channels, self.context_dim, self.num_heads = channels, context_dim, num_heads
        self.norm = GroupNorm(norm_groups, channels, dtype=dtype)
        self.q = _PointwiseConv(channels, channels, dtype, generator)
        self.kv = Linear(context_dim, 2 * channels, dtype=dtype, generator=generator)
        self.proj = _PointwiseConv(channels, channels, dtype, generator)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"CrossAttention2d expects input (N, {self.channels}, H, W), got "
                             f"{x.shape}")
        context = context if isinstance(context, Tensor) else Tensor(
            F.as_constant(x, context, "context"))
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[1] < 1 or \
                context.shape[2] != self.context_dim:
            raise ValueError(f"CrossAttention2d expects context (N={x.shape[0]}, L >= 1, "
                             f"{self.context_dim}), got {context.shape}")
        batch, _, height, width = x.shape
        length = context.shape[1]
        q = _split_heads(self.q(_pixel_rows(self.norm(x))), batch, height * width,
                         self.num_heads)
        kv = self.kv(context.reshape(batch * length, self.context_dim))  # (N * L, 2C)
        k, v = (_split_heads(part, batch, length, self.num_heads) for part in kv.chunk(2, 1))
        attended = _merge_heads(F.scaled_dot_product_attention(q, k, v))  # (N * HW, C)
        return x + _feature_map(self.proj(attended), x.shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, context_dim={self.context_dim}, num_heads={self.num_heads}"
