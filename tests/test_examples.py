"""The quick examples run and write their figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["noising", "schedules"])
def test_figure_examples(name, tmp_path):
    out = tmp_path / f"{name}.png"
    assert load(name).main(["--out", str(out)]) == out and out.stat().st_size > 1000


def test_unet_shapes_prints_the_parameter_count(capsys):
    load("unet_shapes").main([])
    printed = capsys.readouterr().out
    assert "total parameters: 1,623,169" in printed and "(1, 1, 28, 28)" in printed


def test_autograd_tour(capsys):
    load("autograd_tour").training_an_mlp()
    assert "step 300" in capsys.readouterr().out
