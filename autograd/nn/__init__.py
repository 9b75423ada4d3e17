"""Neural-network layers, as in `torch.nn`."""

from autograd.nn import functional, init, utils
from autograd.nn.activation import GELU, ReLU, Sigmoid, SiLU, Softmax, Tanh
from autograd.nn.attention import CrossAttention2d, MultiheadAttention, SelfAttention2d
from autograd.nn.container import ModuleDict, ModuleList, Sequential
from autograd.nn.conv import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d, Upsample
from autograd.nn.dropout import Dropout
from autograd.nn.embedding import Embedding
from autograd.nn.linear import Identity, Linear
from autograd.nn.module import Module, Parameter
from autograd.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm

__all__ = [
    "functional", "init", "utils", "Module", "Parameter", "Linear", "Identity",
    "Sequential", "ModuleList", "ModuleDict", "ReLU", "SiLU", "GELU", "Sigmoid", "Tanh",
    "Softmax",
]
__all__ += ["GroupNorm", "LayerNorm", "BatchNorm1d", "BatchNorm2d", "MultiheadAttention",
            "SelfAttention2d", "CrossAttention2d", "Dropout", "Embedding"]
__all__ += ["Conv2d", "ConvTranspose2d", "Upsample", "AvgPool2d", "MaxPool2d"]
