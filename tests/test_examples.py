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


def test_classifier_guidance_example(tmp_path, monkeypatch, capsys):
    import autograd
    from tinydiff import eval as evaluation
    from tinydiff.data import load_mnist

    def untrained_classifier():  # the scores' values do not matter here, only the pipeline
        autograd.manual_seed(0)
        return evaluation.Classifier().eval()

    def few_mnist(split, **options):  # scoring against all 10,000 test images takes long
        return load_mnist(split, limit=50)

    monkeypatch.setattr(evaluation, "load_classifier", untrained_classifier)
    monkeypatch.setattr(evaluation, "load_mnist", few_mnist)
    example = load("classifier_guidance")
    with pytest.raises(SystemExit, match="unconditional"):
        example.main(["--ckpt", str(_micro_checkpoint(tmp_path / "u", False))])
    checkpoint, classifier = _micro_checkpoint(tmp_path / "c", True), tmp_path / "noisy.npz"
    common = ["--ckpt", str(checkpoint), "--classifier", str(classifier), "--steps", "2",
              "--out", str(tmp_path / "cg.png")]
    out = example.main(common + ["--classifier-steps", "2", "--classifier-batch", "8",
                                 "--accuracy-t", "0", "500", "--accuracy-images", "20",
                                 "--n", "4", "--batch", "3", "--cg-scales", "0", "2",
                                 "--cfg-scales", "0", "2"])
    assert out.stat().st_size > 1000 and classifier.exists()
    printed = capsys.readouterr().out
    assert "trained the noise-aware classifier: 2 steps of 8" in printed
    assert "accuracy on 20 noised test images at t=500" in printed
    assert "DDIM 2 steps, 4 samples per setting" in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith(("CG ", "CFG "))]
    assert [row[:4] for row in rows] == [["CG", "0", "4", "2"], ["CG", "2", "4", "2"],
                                         ["CFG", "0", "4", "2"], ["CFG", "2", "4", "2"]]
    assert rows[0][4:7] == rows[2][4:7]  # scale 0 of both: the same unconditional samples
    example.main(common + ["--n", "2", "--cg-scales", "1", "--cfg-scales", "1",
                           "--table", str(tmp_path / "table.txt")])
    assert f"noise-aware classifier: {classifier}" in capsys.readouterr().out
    assert "CFG" in (tmp_path / "table.txt").read_text()


def test_latent_diffusion_example(tmp_path, capsys):
    pixel = _micro_checkpoint(tmp_path / "pixel", True)
    out = load("latent_diffusion").main([
        "--out-dir", str(tmp_path / "latent"), "--vae-steps", "2", "--vae-batch-size", "4",
        "--unet-steps", "2", "--batch-size", "4", "--train-limit", "16", "--test-limit", "8",
        "--samples", "10", "--sample-steps", "2", "--pixel-ckpt", str(pixel),
        "--timing-samples", "2"])
    assert out.stat().st_size > 1000
    assert (tmp_path / "latent" / "vae-reconstructions.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "reconstruction MSE" in printed and "s/sample" in printed
    again = load("latent_diffusion").main([  # from the saved files
        "--vae", str(tmp_path / "latent" / "vae.npz"), "--ckpt",
        str(tmp_path / "latent" / "ckpt.npz"), "--out-dir", str(tmp_path / "again"),
        "--test-limit", "8", "--samples", "10", "--sample-steps", "2",
        "--pixel-ckpt", str(tmp_path / "missing.npz")])
    assert again.stat().st_size > 1000 and "comparison skipped" in capsys.readouterr().out


def test_learned_variance_example(tmp_path, capsys):
    from tinydiff.training import TrainConfig, Trainer

    images, labels = np.zeros((8, 1, 28, 28), np.float32), np.arange(8) % 10
    paths = {}
    for variance_type in ("fixed_small", "learned_range"):
        trainer = Trainer(TrainConfig(model="micro", steps=1, batch_size=4,
                                      num_train_timesteps=20, variance_type=variance_type),
                          images, labels)
        paths[variance_type] = str(trainer.train(tmp_path / variance_type, progress=False))
    example = load("learned_variance")
    with pytest.raises(SystemExit, match="learned_range"):
        example.main(["--fixed", paths["fixed_small"], "--learned", paths["fixed_small"]])
    out = example.main(["--fixed", paths["fixed_small"], "--learned", paths["learned_range"],
                        "--steps", "20", "3", "--n", "3", "--n-full", "2",
                        "--nll-images", "1", "--ignore-learned", "--out",
                        str(tmp_path / "lv.png")])
    assert out.stat().st_size > 1000
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith(("| fixed", "| learned"))]
    assert [row.split("|")[1:5:3] for row in rows] == [
        [" fixed ", " 20 "], [" fixed ", " 3 "], [" learned ", " 20 "], [" learned ", " 3 "],
        [" learned ", " 20 "], [" learned ", " 3 "]]
    assert all("bits/dim" not in row and "+-" in row for row in rows)


def test_draw_graph_example_writes_a_picture_or_dot_text(tmp_path, capsys):
    (path,) = load("draw_graph").main(["--out", str(tmp_path), "--parts", "mlp"])
    assert path.suffix in (".svg", ".dot") and "2.weight" in path.read_text()
