"""Reverse-mode traversal: walk the graph from an output to the leaves, calling each op's
backward once, in topological order, without recursion."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograd.backend import device_of, get_array_module
from autograd.function import AccumulateGrad, Function, sum_to_shape
from autograd.observers import observed_backward, observers

if TYPE_CHECKING:
    from autograd.tensor import Tensor


def topological_order(root) -> list:
    """Graph nodes reachable from `root`, each before all of its parents (iterative DFS)."""
    postorder, visited = [], {root}
    stack = [(root, iter(root.parents))]
    while stack:
        node, parents = stack[-1]
        for parent in parents:
            if parent is not None and parent not in visited:
                visited.add(parent)
                stack.append((parent, iter(parent.parents)))
                break
        else:
            stack.pop()
            postorder.append(node)
    postorder.reverse()
    return postorder


def _fit_to_input(node: Function, index: int, grad):
    """Bring an op's gradient for input `index` to that input's shape and dtype."""
    shape, dtype, xp = node.input_meta[index]
    if get_array_module(grad) is not xp:
        raise RuntimeError(f"{node.name}.backward returned a gradient on {device_of(grad)} "
                           f"for input {index}, whose array is a {xp.__name__} array")
    grad = sum_to_shape(xp.asarray(grad), shape)
    if grad.dtype != dtype:
        grad = grad.astype(dtype)
    if grad.shape != shape:
        raise RuntimeError(
            f"{node.name}.backward returned a gradient of shape {grad.shape} for input "
            f"{index} of shape {shape}"
        )
    return grad


def _accumulate_into(tensor: Tensor, grad) -> None:
    from autograd.tensor import Tensor

    if tensor.grad is None:
        # A private copy: gradients handed to several inputs may be one array.
        tensor.grad = Tensor._wrap(grad.copy(), requires_grad=False)
    else:
        tensor.grad.data = tensor.grad.data + grad


def run_backward(root: Tensor, grad, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) * grad into every leaf's `.grad`."""
    start = root._grad_node()
    if start is None:
        raise RuntimeError(
            "this tensor does not require grad and has no grad_fn: nothing to differentiate"
        )
    pending = {start: grad}
    for node in topological_order(start):
        grad_out = pending.pop(node, None)
        if grad_out is None:
            continue
        if isinstance(node, AccumulateGrad):
            if node.tensor_hooks is not None:  # register_hook: before .grad
                grad_out = node.tensor_hooks(grad_out)
            _accumulate_into(node.tensor, grad_out)
            continue
        if node.released:
            raise RuntimeError(
                "trying to backward through the graph a second time: its saved arrays were "
                "freed by the first backward; pass retain_graph=True to keep them"
            )
        if node.tensor_hooks is not None:  # register_hook, retain_grad: the grad is complete
            grad_out = node.tensor_hooks(grad_out)
        node._check_versions()
        input_grads = observed_backward(node, grad_out) if observers else node.backward(grad_out)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for index, (parent, input_grad) in enumerate(zip(node.parents, input_grads)):
            if parent is None or input_grad is None:
                continue
            input_grad = _fit_to_input(node, index, input_grad)
            # Out-of-place sum: two inputs' gradients may be the very same array.
            pending[parent] = pending[parent] + input_grad if parent in pending else input_grad
        if not retain_graph:
            node._release()
