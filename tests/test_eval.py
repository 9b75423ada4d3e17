"""Evaluation: the Frechet distance against closed forms, the classifier pipeline, grids."""

from __future__ import annotations

import numpy as np
import pytest

from tinydiff.data import load_mnist
from tinydiff.eval import (
    Classifier,
    accuracy,
    feature_statistics,
    frechet_distance,
    load_classifier,
    predict,
    random_shift,
    train_classifier,
)
from tinydiff.plots import image_grid


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    cov = a @ a.T + np.eye(6)
    mean = rng.standard_normal(6)
    assert frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: sum (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    expected = np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-10)
    # symmetric in its two distributions, for full covariances too
    b = rng.standard_normal((6, 6))
    other = b @ b.T + 0.5 * np.eye(6)
    assert frechet_distance(mean, cov, 0 * mean, other) == pytest.approx(
        frechet_distance(0 * mean, other, mean, cov), rel=1e-9)


def test_frechet_distance_of_samples_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    reference = feature_statistics(rng.standard_normal((20000, 4)))
    small = frechet_distance(*feature_statistics(rng.standard_normal((50, 4))), *reference)
    large = frechet_distance(*feature_statistics(rng.standard_normal((5000, 4))), *reference)
    assert large < small


def test_random_shift_moves_content_within_two_pixels():
    image = -np.ones((1, 1, 28, 28), np.float32)
    image[0, 0, 14, 14] = 1.0
    shifted = random_shift(np.repeat(image, 50, axis=0), np.random.default_rng(0))
    rows, cols = np.nonzero(shifted[:, 0] > 0)[1:]
    assert len(rows) == 50 and np.all(np.abs(rows - 14) <= 2) and np.all(np.abs(cols - 14) <= 2)
    assert len({(r, c) for r, c in zip(rows, cols)}) > 5


@pytest.fixture(scope="module")
def small_classifier():
    images, labels = load_mnist("train", limit=3000)
    return train_classifier(images, labels, epochs=2, batch_size=64, progress=False)


def test_classifier_learns_and_round_trips_through_the_cache(tmp_path, small_classifier):
    model = small_classifier
    test_images, test_labels = load_mnist("test", limit=500)
    assert accuracy(model, test_images, test_labels) > 0.85
    features, probabilities = predict(model, test_images[:10])
    assert features.shape == (10, Classifier.feature_dim)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    import autograd

    path = tmp_path / "classifier.npz"
    autograd.save(dict(model.state_dict()), path)
    again = load_classifier(path, train_if_missing=False)
    np.testing.assert_array_equal(predict(again, test_images[:10])[1], probabilities)
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "missing.npz", train_if_missing=False)


def test_image_grid_layout():
    images = np.stack([np.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])
    grid = image_grid(images, nrow=2, padding=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1)
    assert grid[1, 1] == 0.0 and grid[1, 5] == 0.5 and grid[4, 1] == 1.0 and grid[0, 0] == 1.0


def test_eval_command_scores_labelled_samples(tmp_path, monkeypatch, capsys, small_classifier):
    from tinydiff import eval as evaluation
    from tinydiff.cli import main

    images, labels = load_mnist("test", limit=300)
    monkeypatch.setattr(evaluation, "load_classifier", lambda: small_classifier)
    expected = accuracy(small_classifier, images, labels)
    np.savez(tmp_path / "right.npz", samples=images, labels=labels)
    np.savez(tmp_path / "wrong.npz", samples=images, labels=(labels + 1) % 10)
    assert main(["eval", "--samples", str(tmp_path / "right.npz")]) == 0
    printed = capsys.readouterr().out
    assert "MNIST-FID (300 samples vs test set)" in printed
    assert f"classified as the requested digit: {expected:.3f}" in printed
    report = evaluation.evaluate_samples(images, small_classifier,
                                         labels=(labels + 1) % 10)
    assert report.label_accuracy < 0.1 and report.classes_present == 10
    assert main(["eval", "--samples", str(tmp_path / "wrong.npz")]) == 0
    assert f"requested digit: {report.label_accuracy:.3f}" in capsys.readouterr().out


def test_eval_command_samples_a_checkpoint_and_bounds_the_nll(tmp_path, monkeypatch, capsys,
                                                              small_classifier):
    from tinydiff import eval as evaluation
    from tinydiff.cli import main
    from tinydiff.training import TrainConfig, Trainer

    images, labels = load_mnist("train", limit=8)
    config = TrainConfig(model="micro", steps=1, batch_size=4, class_conditional=True)
    checkpoint = Trainer(config, images, labels).train(tmp_path, progress=False)
    monkeypatch.setattr(evaluation, "load_classifier", lambda: small_classifier)
    assert main(["eval", "--ckpt", str(checkpoint), "--n", "6", "--steps", "2",
                 "--guidance", "2", "--nll-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "MNIST-FID (6 samples vs test set)" in printed
    assert "classified as the requested digit" in printed
    assert "bits/dim (2 test images)" in printed
    assert (tmp_path / "eval-ddim2-samples.png").exists()
