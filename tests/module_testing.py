"""Gradient checks of whole modules: `check_module` runs `op_testing.check_op` with the
module's parameters swapped for the checked tensors (PyTorch's `functional_call`)."""

from __future__ import annotations

import copy

import numpy as np
from op_testing import check_op

from autograd.nn import Module


def functional_call(module: Module, values: dict, *args):
    """module(*args) with the parameters named in `values` (dotted names) replaced."""
    saved = []
    for name, value in values.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = dict(module.named_modules())[owner_name]
        saved.append((owner, leaf, owner._parameters[leaf]))
        owner._parameters[leaf] = value
    try:
        return module(*args)
    finally:
        for owner, leaf, original in saved:
            owner._parameters[leaf] = original


def check_module(module: Module, *inputs: np.ndarray, **kwargs) -> None:
    """Gradcheck a float64 module w.r.t. its inputs and every parameter."""
    names = [name for name, _ in module.named_parameters()]
    params = [p.numpy().copy() for _, p in module.named_parameters()]

    def runner(owner: Module):
        def run(*tensors):
            values = dict(zip(names, tensors[len(inputs):]))
            return functional_call(owner, values, *tensors[:len(inputs)])

        return run

    # the device legs run a copy of the module (its buffers too) on the device
    check_op(runner(module), *inputs, *params,
             device_fn=lambda device: runner(copy.deepcopy(module).to(device)), **kwargs)
