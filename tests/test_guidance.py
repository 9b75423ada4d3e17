"""Classifier guidance: the noise-aware classifier, its gradient, checkpoints and the samplers'
classifier_grad_fn / classifier_scale."""

from __future__ import annotations

import numpy as np
import pytest

import autograd
from autograd import nn
from autograd.nn import functional as F
from tinydiff.guidance import (
    NoiseAwareClassifier,
    NoiseAwareClassifierConfig,
    classifier_grad_fn,
    classifier_log_prob_gradient,
    load_noise_aware_classifier,
    noised_accuracy,
    save_classifier,
    train_noise_aware_classifier,
)
from tinydiff.models import build_model
from tinydiff.samplers import sample
from tinydiff.schedules import NoiseSchedule

TINY = NoiseAwareClassifierConfig(base_channels=4, channel_mult=(1, 2), norm_groups=2,
                                  time_embed_dim=8, num_classes=3, image_size=8)


def tiny_classifier(seed: int = 0, dtype=np.float64) -> NoiseAwareClassifier:
    autograd.manual_seed(seed)
    return NoiseAwareClassifier(TINY).to(dtype).eval()


def log_prob_sum(classifier, x: np.ndarray, t: np.ndarray, labels: np.ndarray) -> float:
    """sum_i log p(labels[i] | x[i], t[i]) in plain NumPy from the logits (no graph)."""
    with autograd.no_grad():
        logits = classifier(autograd.Tensor(x), t).numpy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(log_probs[np.arange(len(x)), labels].sum())


def test_classifier_shapes_and_parameter_count():
    model = NoiseAwareClassifier()
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 300_000
    x = np.zeros((2, 1, 28, 28), np.float32)
    with autograd.no_grad():
        logits = model(x, np.array([0, 999]))
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(np.zeros((2, 28, 28), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"integer t of shape \(2,\)"):
        model(x, np.array([0.5, 1.0]))
    config = NoiseAwareClassifierConfig.from_dict(TINY.to_dict())
    assert config == TINY and isinstance(config.channel_mult, tuple)


def test_gradient_matches_central_differences_in_float64():
    classifier = tiny_classifier()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 8, 8))
    t = np.array([0, 40, 99])
    labels = np.array([2, 0, 1])
    grad = classifier_log_prob_gradient(classifier, x, t, labels)
    assert grad.shape == x.shape and grad.dtype == np.float64 and np.abs(grad).max() > 1e-4
    h = 1e-6

    def derivative(direction: np.ndarray) -> float:
        return (log_prob_sum(classifier, x + h * direction, t, labels)
                - log_prob_sum(classifier, x - h * direction, t, labels)) / (2 * h)

    for _ in range(3):  # random directions
        v = rng.standard_normal(x.shape)
        assert np.sum(grad * v) == pytest.approx(derivative(v), rel=1e-6, abs=1e-8)
    for flat in rng.choice(x.size, 6, replace=False):  # single coordinates
        e = np.zeros(x.size)
        e[flat] = 1.0
        assert grad.flat[flat] == pytest.approx(derivative(e.reshape(x.shape)), rel=1e-5,
                                                abs=1e-8)


def test_gradient_is_per_sample_and_leaves_the_classifier_alone():
    classifier = tiny_classifier(dtype=np.float32)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    t, labels = np.array([5, 10, 50, 90]), np.array([0, 1, 2, 1])
    before = [p.data.copy() for p in classifier.parameters()]
    with autograd.no_grad():  # as inside a sampling loop
        grad = classifier_log_prob_gradient(classifier, x, t, labels)
        assert not autograd.is_grad_enabled()
    assert grad.dtype == np.float32
    for i in range(4):
        alone = classifier_log_prob_gradient(classifier, x[i:i + 1], t[i:i + 1], labels[i:i + 1])
        np.testing.assert_allclose(grad[i:i + 1], alone, rtol=1e-5, atol=1e-7)
    changed = x.copy()
    changed[3] = rng.standard_normal(changed[3].shape)
    other = classifier_log_prob_gradient(classifier, changed, t, np.array([0, 1, 2, 0]))
    np.testing.assert_allclose(other[:3], grad[:3], rtol=1e-5, atol=1e-7)
    assert not np.allclose(other[3], grad[3])
    for p, original in zip(classifier.parameters(), before):
        assert p.grad is None and p.requires_grad
        np.testing.assert_array_equal(p.data, original)


def test_clear_errors_for_bad_inputs():
    classifier = tiny_classifier()
    x, t = np.zeros((2, 1, 8, 8)), np.array([1, 2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        classifier_log_prob_gradient(classifier, x, t, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        classifier_grad_fn(classifier, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        classifier_log_prob_gradient(classifier, x, t, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="labels must be integers"):
        classifier_log_prob_gradient(classifier, x, t, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"t must be integers of shape \(2,\)"):
        classifier_log_prob_gradient(classifier, x, np.array([1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="x_t must be a float batch"):
        classifier_log_prob_gradient(classifier, np.zeros(2), t, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        classifier_log_prob_gradient(classifier, np.zeros((2, 3, 8, 8)), t, np.array([0, 1]))


def toy_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images whose label (0, 1, 2) is which third of the columns is bright."""
    labels = rng.integers(0, 3, count)
    images = np.full((count, 1, 8, 8), -1.0, np.float32)
    for i, label in enumerate(labels):
        images[i, :, :, 3 * label:3 * label + 2] = 1.0
    return images, labels


def test_classifier_learns_and_round_trips_through_a_file(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = toy_images(256, rng)
    schedule = NoiseSchedule(num_train_timesteps=50)

    def held_out_loss(model) -> float:
        x, y = toy_images(128, np.random.default_rng(1))
        t = np.random.default_rng(2).integers(0, 50, len(x))
        noisy = x + 0.3 * np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
        with autograd.no_grad():
            return float(F.cross_entropy(model(noisy, t), y).item())

    untrained = train_noise_aware_classifier(images, labels, schedule, steps=0, seed=0,
                                             config=TINY, progress=False)
    model = train_noise_aware_classifier(images, labels, schedule, steps=60, batch_size=16,
                                         lr=1e-2, seed=0, config=TINY, progress=False)
    assert held_out_loss(model) < 0.5 * held_out_loss(untrained)
    test_x, test_y = toy_images(200, np.random.default_rng(4))
    assert noised_accuracy(model, schedule, test_x, test_y, t=10) > 0.9

    path = save_classifier(model, tmp_path / "c.npz", schedule)
    again = load_noise_aware_classifier(path, schedule)
    assert again.config == model.config
    x, t = test_x[:5], np.arange(5) * 10
    with autograd.no_grad():
        np.testing.assert_array_equal(again(x, t).numpy(), model(x, t).numpy())
    with pytest.raises(ValueError, match="noise schedule"):
        load_noise_aware_classifier(path, NoiseSchedule(num_train_timesteps=60))
    with pytest.raises(FileNotFoundError, match="no noise-aware classifier"):
        load_noise_aware_classifier(tmp_path / "missing.npz")
    autograd.save({"format": "something-else"}, tmp_path / "other.npz")
    with pytest.raises(ValueError, match="not a noise-aware classifier"):
        load_noise_aware_classifier(tmp_path / "other.npz")


class GaussianClassifier(nn.Module):
    """log p(y | x) = -|x - mu_y|^2 / 2 + const (equal priors), mu_y constant images; t is
    ignored."""

    def __init__(self, levels: list[float], shape: tuple[int, ...]) -> None:
        super().__init__()
        means = np.stack([np.full(shape, level, np.float32) for level in levels])
        self.means = nn.Parameter(means.reshape(len(levels), -1))

    def forward(self, x, t):
        difference = x.flatten(1)[:, None, :] - self.means[None]
        return -(difference * difference).sum(dim=2) / 2


def test_gaussian_classifier_gradient_is_the_closed_form():
    classifier = GaussianClassifier([0.5, -0.5], (1, 2, 2))
    x = np.random.default_rng(0).standard_normal((3, 1, 2, 2)).astype(np.float32)
    labels = np.array([0, 1, 1])
    grad = classifier_log_prob_gradient(classifier, x, np.zeros(3, np.int64), labels)
    means = classifier.means.data
    logits = -((x.reshape(3, 1, -1) - means[None]) ** 2).sum(axis=2) / 2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = means[labels] - p @ means  # mu_y - E_p[mu]
    np.testing.assert_allclose(grad.reshape(3, -1), expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def micro_unet():
    autograd.manual_seed(0)
    return build_model("micro", image_size=8).eval()


def guided(model, sampler: str, fn=None, scale: float | None = None) -> np.ndarray:
    options = {} if fn is None else {"classifier_grad_fn": fn, "classifier_scale": scale}
    with autograd.no_grad():
        return sample(model, NoiseSchedule(num_train_timesteps=100), (6, 1, 8, 8),
                      sampler=sampler, num_inference_steps=5, seed=3, **options)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_scale_zero_is_unguided_and_guidance_pulls_toward_the_class(micro_unet, sampler):
    classifier = GaussianClassifier([0.5, -0.5], (1, 8, 8))
    unguided = guided(micro_unet, sampler)
    up = classifier_grad_fn(classifier, np.zeros(6, np.int64))
    down = classifier_grad_fn(classifier, np.ones(6, np.int64))
    np.testing.assert_array_equal(guided(micro_unet, sampler, up, 0.0), unguided)
    toward_up, toward_down = guided(micro_unet, sampler, up, 4.0), guided(micro_unet, sampler,
                                                                          down, 4.0)
    assert toward_up.dtype == unguided.dtype == np.float32
    assert not np.array_equal(toward_up, unguided)
    # grad = (1 - p_y)(mu_y - mu_other): every sample's mean moves toward mu_y's (those the
    # classifier already gives to y with p_y ~ 1 barely move), the batch's clearly.
    shift_up = toward_up.mean(axis=(1, 2, 3)) - unguided.mean(axis=(1, 2, 3))
    shift_down = toward_down.mean(axis=(1, 2, 3)) - unguided.mean(axis=(1, 2, 3))
    assert np.all(shift_up > -1e-3) and shift_up.mean() > 0.1
    assert np.all(shift_down < 1e-3) and shift_down.mean() < -0.1
