"""Linear layer and the identity."""

from __future__ import annotations

import numpy as np

from autograd.nn import functional as F
from autograd.nn import init
from autograd.nn.module import Module, Parameter
from autograd.tensor import Tensor, default_dtype


class Linear(Module):
    """y = x W^T + b. x: (*, in_features) -> (*, out_features). PyTorch's default init."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype=None, generator=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        dtype = dtype or default_dtype
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        self.bias = Parameter(np.empty(out_features, dtype)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        init.default_layer_init_(self.weight, self.bias, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x
