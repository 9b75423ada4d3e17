"""Embedding: a lookup table of vectors, indexed by integer ids. The gradient of a row is
the sum of the upstream gradients of every position that looked it up (scatter-add, through
`autograd.ops.getitem`).

Ids given as NumPy arrays or lists are checked on the host and copied to the table's
device; ids already on a GPU are not range-checked (that would copy them back to the host:
as in PyTorch, keep ids in range there)."""

from __future__ import annotations

import numpy as np

from autograd import ops
from autograd.backend import get_array_module, is_cupy_array, to_device
from autograd.grad_mode import no_grad
from autograd.nn import init
from autograd.nn.module import Module, Parameter
from autograd.tensor import Tensor, default_dtype


def _indices(indices, weight: Tensor):
    """The ids as an integer array on the weight's device (range-checked on the host)."""
    if isinstance(indices, Tensor) and indices.device != weight.device:
        raise RuntimeError(f"embedding: the indices are on {indices.device} and the weight "
                           f"on {weight.device}: move them with .to(device) first")
    array = indices.data if isinstance(indices, Tensor) else indices
    if not is_cupy_array(array):
        array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"embedding indices must be integers, got dtype {array.dtype}")
    count = weight.shape[0]
    if isinstance(array, np.ndarray) and array.size and (array.min() < 0
                                                         or array.max() >= count):
        raise IndexError(f"embedding indices must lie in [0, {count}), got "
                         f"{array.min()}..{array.max()}")
    return to_device(array, weight.device)


def embedding(indices, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """indices: integer array or tensor of any shape (*), weight: (num_embeddings, dim)
    -> (*, dim). Rows looked up at `padding_idx` get no gradient."""
    if weight.ndim != 2:
        raise ValueError(f"embedding weight must be (num_embeddings, dim), got {weight.shape}")
    index = _indices(indices, weight)
    out = ops.getitem(weight, index)  # d weight[i] = sum of grad over positions with id i
    if padding_idx is not None:
        padding = get_array_module(index).expand_dims(index == padding_idx % weight.shape[0],
                                                      -1)
        out = ops.where(padding, out.detach(), out)
    return out


class Embedding(Module):
    """A (num_embeddings, embedding_dim) table initialised from N(0, 1), as in PyTorch; the
    `padding_idx` row starts at zero and receives no gradient."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype=None, generator: np.random.Generator | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx {padding_idx} is outside [-{num_embeddings}, "
                             f"{num_embeddings})")
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim),
                                         dtype or default_dtype))
        init.normal_(self.weight, generator=generator)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, indices) -> Tensor:
        return embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        padding = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"
