"""Anomaly mode: backward stops at the op whose gradient turns NaN or infinite, naming it
and the line that created it."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import autograd

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the planted NaNs


def _line(marker: str) -> int:
    source, start = inspect.getsourcelines(inspect.currentframe().f_back.f_code)
    return start + next(i for i, line in enumerate(source) if marker in line)


def test_a_planted_nan_is_found_at_its_op_and_line():
    x = autograd.tensor([4.0, -1.0, 9.0], requires_grad=True)
    with autograd.detect_anomaly():
        h = (x * 2).exp()
        r = (x - 3).sqrt()  # sqrt of negatives: NaN here
        loss = (h + r * 2).sum()
        with pytest.raises(RuntimeError) as error:
            loss.backward()
    message = str(error.value)
    assert "Function 'SqrtBackward' returned nan values in its 0th output" in message
    assert re.search(rf"test_anomaly.py:{_line('sqrt of negatives')} in test_a_planted_nan",
                     message), message
    assert "inputs of shapes (3,)" in message
    assert x.grad is None  # stopped before reaching the leaf


def test_log_of_zero_in_the_middle_is_infinite_and_named():
    x = autograd.tensor([[0.0, 1.0]], requires_grad=True)
    w = autograd.tensor([[2.0], [3.0]], requires_grad=True)
    autograd.set_detect_anomaly(True)
    try:
        assert autograd.is_anomaly_enabled()
        y = (x @ w).tanh() + x.log().sum()  # log(0) = -inf: its gradient 1/0 is inf
        with pytest.raises(RuntimeError, match=r"'LogBackward' returned infinite values.*"
                           rf"test_anomaly.py:{_line('log(0) = -inf')} "):
            (y * 0.5).sum().backward()
    finally:
        autograd.set_detect_anomaly(False)
    assert not autograd.is_anomaly_enabled()


def test_without_anomaly_mode_the_nan_flows_silently():
    x = autograd.tensor([-1.0], requires_grad=True)
    x.sqrt().sum().backward()
    assert np.isnan(x.grad.numpy()).all()


def test_the_op_names_its_module():
    layer = autograd.nn.Linear(2, 1)
    layer.weight.data[...] = np.nan
    with autograd.detect_anomaly(), pytest.raises(RuntimeError, match="in module Linear"):
        layer(autograd.ones(1, 2, requires_grad=True)).sum().backward()
