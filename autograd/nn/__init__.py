"""Neural-network layers, as in `torch.nn`."""

from autograd.nn import functional, init, utils
from autograd.nn.activation import GELU, ReLU, Sigmoid, SiLU, Softmax, Tanh
from autograd.nn.container import ModuleDict, ModuleList, Sequential
from autograd.nn.linear import Identity, Linear
from autograd.nn.module import Module, Parameter

__all__ = [
    "functional", "init", "utils", "Module", "Parameter", "Linear", "Identity",
    "Sequential", "ModuleList", "ModuleDict", "ReLU", "SiLU", "GELU", "Sigmoid", "Tanh",
    "Softmax",
]
