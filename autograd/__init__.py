"""autograd: a small reverse-mode automatic differentiation engine on NumPy.

    import autograd
    x = autograd.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    x.grad  # tensor([2., 4., 6.])

Note: the import name `autograd` is also that of the HIPS autograd package; the two cannot
be installed in one environment.
"""

# memory: importing it sets malloc to keep freed memory for the next step (see memory.py)
from autograd import cuda, memory, nn, optim, profiler, viz
from autograd.anomaly import detect_anomaly, is_anomaly_enabled, set_detect_anomaly
from autograd.backend import Device, device, get_array_module
from autograd.creation import (
    arange,
    eye,
    from_numpy,
    full,
    linspace,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)
from autograd.function import Function
from autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from autograd.gradcheck import GradcheckError, gradcheck, gradcheck_directional
from autograd.kernels.threads import get_num_threads, set_num_threads
from autograd.ops import *  # noqa: F403  (every op as autograd.<name>)
from autograd.random import default_generator, manual_seed
from autograd.serialization import load, save
from autograd.tensor import Tensor, bool_, float32, float64, int64

__version__ = "0.1.0"
