"""The quick examples run and write their figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    """A 2-step micro run through the training example (its checkpoint feeds the others)."""
    out = tmp_path_factory.mktemp("run")
    grid = load("train_mnist").main(["--steps", "2", "--batch-size", "4", "--preset", "micro",
                                     "--sample-steps", "2", "--out", str(out)])
    assert grid.stat().st_size > 1000 and (out / "loss.png").exists()
    return out / "ckpt.npz"


def test_trajectory_example(micro_run, tmp_path):
    out = load("trajectory").main(["--ckpt", str(micro_run), "--steps", "5", "--columns", "3",
                                   "--count", "2", "--out", str(tmp_path / "t.png")])
    assert out.stat().st_size > 1000


def test_sampler_comparison_example(micro_run, tmp_path, capsys):
    out = load("ddpm_vs_ddim").main(["--ckpt", str(micro_run), "--n", "2", "--ddpm-steps", "6",
                                     "--ddim-steps", "3", "2", "--out", str(tmp_path / "s.png")])
    assert out.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "ddpm    6 steps" in printed and "ddim    2 steps" in printed


def test_guidance_example(tmp_path):
    with pytest.raises(SystemExit, match="unconditional"):
        load("guidance").main(["--ckpt", str(_micro_checkpoint(tmp_path / "u", False))])
    out = load("guidance").main(["--ckpt", str(_micro_checkpoint(tmp_path / "c", True)),
                                 "--scales", "0", "3", "--steps", "2",
                                 "--out", str(tmp_path / "g.png")])
    assert out.stat().st_size > 1000


def _micro_checkpoint(out, conditional: bool):
    from tinydiff.training import TrainConfig, Trainer

    images, labels = np.zeros((8, 1, 28, 28), np.float32), np.arange(8) % 10
    trainer = Trainer(TrainConfig(model="micro", steps=1, batch_size=4,
                                  class_conditional=conditional), images, labels)
    return trainer.train(out, progress=False)
