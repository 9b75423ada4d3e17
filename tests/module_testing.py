"""Gradient checks of whole modules: `check_module` runs `op_testing.check_op` with the
module's parameters swapped for the checked tensors (PyTorch's `functional_call`); and
`small_net`, the small float64 network of the device and data-parallel tests."""

from __future__ import annotations

import copy

import numpy as np
from op_testing import check_op

import autograd
from autograd import nn
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


def small_net() -> nn.Module:
    """conv 3x3 -> GroupNorm -> SiLU -> conv 1x1, 2 channels in and 1 out, float64, seeded."""
    autograd.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                         nn.Conv2d(4, 1, 1)).double()
