"""One batch's gradient computed as slices on worker threads (data parallelism on CPU cores).

On a small CPU, two single-threaded workers each running forward and backward on half a
batch beat one pass whose every kernel is split over two threads: small matrix products
and memory-bound kernels scale poorly, whole passes do not (measured on mnist-tiny with 2
cores: see benchmarks/README.md). NumPy's BLAS and the numba kernels (`nogil=True`) run
without the GIL, so the threads overlap.

`Replicas(module, count)` holds `count` copies of a module that share its parameter and
buffer arrays but record their own graphs and gradients. `backward(losses, workers)` runs
loss i on replica i, `workers` at a time, then sets each parameter's `.grad` to the sum of
the replicas' gradients taken in order 0, 1, ...: the result does not depend on `workers`
or on thread timing. Each loss should already carry its share of the batch mean.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from autograd.kernels.threads import single_threaded_blas
from autograd.nn.dropout import Dropout
from autograd.nn.module import Module
from autograd.tensor import Tensor


class Replicas:
    """`count` copies of `module` sharing its arrays, each with its own gradients."""

    def __init__(self, module: Module, count: int) -> None:
        if count < 1:
            raise ValueError(f"Replicas: count must be >= 1, got {count}")
        if any(isinstance(m, Dropout) and m.p > 0 for m in module.modules()):
            raise ValueError("Replicas: dropout draws from the global generator, which "
                             "threads would share in no fixed order; use one replica")
        self.module = module
        self.parameters = list(module.parameters())
        shared = {id(t.data): t.data for t in (*self.parameters, *module.buffers())}
        self.copies = [copy.deepcopy(module, memo=dict(shared)) for _ in range(count)]
        self.copy_parameters = [list(replica.parameters()) for replica in self.copies]
        self._pool: ThreadPoolExecutor | None = None

    def backward(self, losses: Sequence[Callable[[Module], Tensor]],
                 workers: int = 1) -> list[float]:
        """losses[i](replica i).backward() for each i, then parameter.grad = sum over i of
        replica i's gradient (None where no replica got one). Returns the loss values."""
        if len(losses) != len(self.copies):
            raise ValueError(f"Replicas.backward: {len(losses)} losses for "
                             f"{len(self.copies)} replicas")
        for replica, parameters in zip(self.copies, self.copy_parameters):
            replica.train(self.module.training)
            for mine, theirs in zip(parameters, self.parameters):  # arrays may be rebound
                mine.data, mine.grad = theirs.data, None

        def run(index: int) -> float:
            loss = losses[index](self.copies[index])
            loss.backward()
            return loss.item()

        def run_single_threaded(index: int) -> float:
            numba.set_num_threads(1)  # per thread in numba
            return run(index)

        workers = min(workers, len(losses))
        if workers > 1:
            if self._pool is None or self._pool._max_workers != workers:
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="replica")
            with single_threaded_blas():
                values = list(self._pool.map(run_single_threaded, range(len(losses))))
        else:
            values = [run(i) for i in range(len(losses))]
        for index, parameter in enumerate(self.parameters):
            grads = [parameters[index].grad for parameters in self.copy_parameters]
            grads = [g.data for g in grads if g is not None]
            parameter.grad = None if not grads else Tensor(_ordered_sum(grads))
        return values


def _ordered_sum(arrays: list[np.ndarray]) -> np.ndarray:
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total
