"""The fast samplers from the command line and in examples/compare_samplers.py, on a tiny
untrained checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tinydiff.cli import build_parser, main, sampler_options
from tinydiff.samplers import SAMPLERS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tinydiff.training import TrainConfig, Trainer

    images, labels = np.zeros((8, 1, 28, 28), np.float32), np.arange(8) % 10
    trainer = Trainer(TrainConfig(model="micro", steps=1, batch_size=4,
                                  class_conditional=True), images, labels)
    return trainer.train(tmp_path_factory.mktemp("run"), progress=False)


def test_help_lists_the_registry_and_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sample", "--help"])
    text = capsys.readouterr().out
    for word in (*SAMPLERS, "--solver-order", "--karras", "--spacing", "--no-progress"):
        assert word in text


def test_sampler_options_of_the_flags():
    assert sampler_options("dpmsolver++", solver_order=3, karras=True) == {
        "solver_order": 3, "use_karras_sigmas": True, "thresholding": True}
    assert sampler_options("unipc", latent=True) == {}
    assert sampler_options("ddim", eta=0.5) == {"eta": 0.5, "clip_sample": True}
    with pytest.raises(ValueError, match="--solver-order is an option of dpmsolver.., unipc"):
        sampler_options("euler", solver_order=2)


def test_sample_with_a_fast_sampler(checkpoint, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "--ckpt", str(checkpoint), "--sampler", "dpmsolver++", "--steps",
                 "3", "--karras", "--solver-order", "3", "--n", "3", "--out", str(out),
                 "--npz", str(tmp_path / "s.npz"), "--no-progress"]) == 0
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (3, 1, 28, 28) and np.all(np.isfinite(samples))
    assert main(["sample", "--ckpt", str(checkpoint), "--sampler", "heun", "--steps", "2",
                 "--n", "2", "--out", str(out), "--solver-order", "2"]) == 1
    assert "--solver-order is an option of" in capsys.readouterr().err


def test_compare_samplers_example(checkpoint, monkeypatch, capsys):
    import autograd
    from tinydiff import eval as evaluation
    from tinydiff.data import load_mnist

    def untrained_classifier():  # the scores' values do not matter here, only the pipeline
        autograd.manual_seed(0)
        return evaluation.Classifier().eval()

    monkeypatch.setattr(evaluation, "load_classifier", untrained_classifier)
    monkeypatch.setattr(evaluation, "load_mnist", lambda split, **o: load_mnist(split, limit=50))
    spec = importlib.util.spec_from_file_location("compare", EXAMPLES / "compare_samplers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--ckpt", str(checkpoint), "--n", "10", "--steps", "2",
                        "--samplers", "ddim", "dpmsolver++/karras", "heun"])
    assert [(r["sampler"], r["model_calls"]) for r in rows] == [
        ("ddim", 2), ("dpmsolver++ (Karras)", 2), ("heun", 3)]
    printed = capsys.readouterr().out
    assert "| heun | 2 | 3 | 10 |" in printed
