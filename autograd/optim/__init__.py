"""Optimizers, learning-rate schedules and the parameter EMA, as in `torch.optim` and
diffusers."""

from autograd.optim import lr_scheduler
from autograd.optim.adam import Adam, AdamW
from autograd.optim.ema import EMAModel
from autograd.optim.optimizer import Optimizer
from autograd.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "EMAModel", "lr_scheduler"]
