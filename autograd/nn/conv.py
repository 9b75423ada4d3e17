"""Convolution, transposed convolution, pooling and upsampling layers (PyTorch's names,
arguments and default init)."""

from __future__ import annotations

import numpy as np

from autograd.nn import functional as F
from autograd.nn import init
from autograd.nn.module import Module, Parameter
from autograd.ops.conv import pair, positive_pair
from autograd.tensor import Tensor, default_dtype


class _ConvNd(Module):
    """Holds the geometry, weight (channels_out_first, channels_in_per_group, kh, kw) and
    bias (out_channels), with PyTorch's default init: U(+-1/sqrt(fan_in)),
    fan_in = weight.shape[1] * kh * kw. `transposed` swaps the weight's channel dims."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, dilation,
                 bias: bool, groups: int, transposed: bool, dtype, generator) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} "
                             f"must both be divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = positive_pair(stride, "stride")
        self.dilation = positive_pair(dilation, "dilation")
        first, second = (in_channels, out_channels) if transposed else (out_channels,
                                                                         in_channels)
        weight_shape = (first, second // groups, *self.kernel_size)
        dtype = dtype or default_dtype
        self.weight = Parameter(np.empty(weight_shape, dtype))
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype))
        else:
            self.register_parameter("bias", None)
        init.default_layer_init_(self.weight, self.bias, generator=generator)


class Conv2d(_ConvNd):
    """(N, in_channels, H, W) -> (N, out_channels, ho, wo); see `F.conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, dtype=None,
                 generator=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias,
                         groups, False, dtype, generator)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding")

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")


class ConvTranspose2d(_ConvNd):
    """(N, in_channels, H, W) -> (N, out_channels, ho, wo), weight (in_channels,
    out_channels / groups, kh, kw); see `F.conv_transpose2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=0, output_padding=0, groups: int = 1, bias: bool = True,
                 dilation=1, dtype=None, generator=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias,
                         groups, True, dtype, generator)
        self.padding = pair(padding, "padding")
        self.output_padding = pair(output_padding, "output_padding")

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, groups={self.groups}, "
                f"dilation={self.dilation}, bias={self.bias is not None}")


class Upsample(Module):
    """Nearest-neighbour resize to `size` or by `scale_factor`; see `F.interpolate`."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest") -> None:
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, self.size, self.scale_factor, self.mode)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale_factor={self.scale_factor}, mode={self.mode!r}"


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(_Pool2d):
    """Mean over kh x kw windows; see `F.avg_pool2d`."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class MaxPool2d(_Pool2d):
    """Max over kh x kw windows; see `F.max_pool2d`."""

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
