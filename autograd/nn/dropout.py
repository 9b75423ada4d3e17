"""Dropout: zero each element with probability p and scale the survivors by 1 / (1 - p)
(inverted dropout, so evaluation needs no rescaling). Random draws go through a
`numpy.random.Generator` (`generator=`, else autograd's seeded default), on the host; the
mask is then copied to the input's device."""

from __future__ import annotations

import numpy as np

from autograd import ops
from autograd.nn.module import Module
from autograd.random import dropout_keep_mask
from autograd.tensor import Tensor


def dropout(x: Tensor, p: float = 0.5, training: bool = True,
            generator: np.random.Generator | None = None) -> Tensor:
    """x with elements zeroed with probability p and the rest scaled by 1 / (1 - p) when
    training; x itself otherwise."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    mask = dropout_keep_mask(x.shape, p, x.dtype, generator, x.device)  # drawn on the host
    return ops.mul(x, mask)  # d = keep / (1 - p)


class Dropout(Module):
    """Dropout in training mode, the identity in evaluation mode."""

    def __init__(self, p: float = 0.5, generator: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
