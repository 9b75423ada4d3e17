"""One batch's gradient computed as slices on worker threads (data parallelism on CPU cores).

On a small CPU, two single-threaded workers each running forward and backward on half a
batch beat one pass whose every kernel is split over two threads: small matrix products
and memory-bound kernels scale poorly, whole passes do not (measured on mnist-tiny with 2
cores: see benchmarks/README.md). NumPy's BLAS and the numba kernels (`nogil=True`) run
without the GIL, so the threads overlap.

`Replicas(module, count)` holds `count` copies of a module that share its parameter and
buffer arrays but record their own graphs and gradients. `backward(losses, workers)` runs
loss i on replica i, `workers` at a time, each on one BLAS thread, then sets each
parameter's `.grad` to the sum of the replicas' gradients taken in order 0, 1, ...: the
result does not depend on `workers` or on thread timing. Each loss should already carry
its share of the batch mean.

`parallel_apply(modules, inputs)` is PyTorch's function of that name for CPU threads:
module i on input i, concurrently (inference needs no replicas: one module can serve
every thread, since a forward pass without a graph changes nothing).

On a GPU there is nothing to gain from threads (the device runs one pass's kernels in
order either way): for modules or inputs on a GPU, the slices run one after another on
the calling thread, and the gradients are summed in the same order 0, 1, ..., so the
results are exactly those of the threaded CPU path on the same arrays.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np

from autograd.backend import get_array_module, is_cupy_array
from autograd.grad_mode import enable_grad, is_grad_enabled, set_grad_enabled
from autograd.kernels.threads import ordered_sum, run_on_workers, single_threaded_blas
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

    def backward(self, losses: Sequence[Callable[[Module], Tensor]],
                 workers: int = 1) -> list[Tensor]:
        """losses[i](replica i).backward() for each i, then parameter.grad = sum over i of
        replica i's gradient (None where no replica got one). Returns the losses, detached
        0-d tensors on the module's device (nothing is read back from a GPU)."""
        if len(losses) != len(self.copies):
            raise ValueError(f"Replicas.backward: {len(losses)} losses for "
                             f"{len(self.copies)} replicas")
        for replica, parameters in zip(self.copies, self.copy_parameters):
            replica.train(self.module.training)
            for mine, theirs in zip(parameters, self.parameters):  # arrays may be rebound
                mine.data, mine.grad = theirs.data, None
            for mine, theirs in zip(replica.buffers(), self.module.buffers()):  # or moved
                mine.data = theirs.data

        def run(index: int):
            with enable_grad():  # grad mode is per thread: the workers' default, here too
                loss = losses[index](self.copies[index])
            loss.backward()
            return loss.detach()

        on_gpu = _on_gpu(self.parameters)
        if on_gpu:
            workers = 1
        values = _run_on_workers(run, len(losses), workers, always_single_threaded=not on_gpu)
        for index, parameter in enumerate(self.parameters):
            grads = [parameters[index].grad for parameters in self.copy_parameters]
            grads = [g.data for g in grads if g is not None]
            parameter.grad = None if not grads else Tensor(ordered_sum(grads))
        return values


def parallel_apply(modules: Sequence[Callable[..., Any]], inputs: Sequence[tuple],
                   kwargs_tup: Sequence[dict] | None = None,
                   workers: int | None = None) -> list[Any]:
    """[modules[i](*inputs[i], **kwargs_tup[i]) for each i], on `workers` threads (default:
    autograd's thread count), each thread with the caller's grad mode."""
    if len(modules) != len(inputs) or (kwargs_tup is not None
                                       and len(kwargs_tup) != len(inputs)):
        raise ValueError(f"parallel_apply: {len(modules)} modules, {len(inputs)} inputs"
                         + ("" if kwargs_tup is None else f", {len(kwargs_tup)} kwargs"))
    kwargs_tup = kwargs_tup or [{}] * len(inputs)
    mode = is_grad_enabled()

    def run(index: int) -> Any:
        with set_grad_enabled(mode):
            return modules[index](*inputs[index], **kwargs_tup[index])

    module_tensors = [t for m in modules if isinstance(m, Module) for t in m.parameters()]
    values = [*module_tensors, *(v for args in inputs for v in args),
              *(v for kwargs in kwargs_tup for v in kwargs.values())]
    workers = 1 if _on_gpu(values) else workers or numba.get_num_threads()
    return _run_on_workers(run, len(inputs), workers)


def _on_gpu(values) -> bool:
    """Whether any of these tensors or arrays lives on a GPU."""
    return any(is_cupy_array(v.data if isinstance(v, Tensor) else v) for v in values)


def _run_on_workers(run: Callable[[int], Any], count: int, workers: int,
                    always_single_threaded: bool = False) -> list[Any]:
    """[run(i) for i in range(count)], on up to `workers` threads that each use one numba
    and one BLAS thread; in the calling thread (with its threads) when that is 1, unless
    `always_single_threaded`: a 2-thread BLAS rounds differently from a 1-thread one."""
    if min(workers, count) <= 1 and not always_single_threaded:
        return [run(i) for i in range(count)]
    with single_threaded_blas():
        return run_on_workers(run, count, workers)


def sliced_forward(module: Callable[..., Any], workers: int | None = None) -> Callable:
    """A function like `module` for inference on big batches: it cuts every argument that is
    an array of the batch's length (the first argument's) into `workers` slices along dim
    0, runs them with `parallel_apply` and concatenates the outputs (as arrays of the
    outputs' device: NumPy arrays on the CPU). On a GPU (module or input there) the batch
    stays whole: one call, as slices gain nothing there. Results equal one full-batch call
    up to float rounding."""
    workers = workers or numba.get_num_threads()
    parameters = list(module.parameters()) if isinstance(module, Module) else []

    def forward(x, *args: Any, **kwargs: Any) -> np.ndarray:
        batch = len(x)
        count = 1 if _on_gpu([x, *parameters]) else min(workers, batch)
        bounds = np.linspace(0, batch, count + 1).round().astype(int)
        parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

        def cut(value: Any, part: slice) -> Any:
            array = value.data if isinstance(value, Tensor) else value
            if (isinstance(array, np.ndarray) or is_cupy_array(array)) and array.ndim \
                    and len(array) == batch:
                return array[part]
            return value

        outputs = parallel_apply([module] * len(parts),
                                 [tuple(cut(a, p) for a in (x, *args)) for p in parts],
                                 [{k: cut(v, p) for k, v in kwargs.items()} for p in parts],
                                 workers)
        arrays = [o.data if isinstance(o, Tensor) else o for o in outputs]
        arrays = [a if is_cupy_array(a) else np.asarray(a) for a in arrays]
        return arrays[0] if len(arrays) == 1 else get_array_module(*arrays).concatenate(arrays)

    return forward
