"""The VAE: the KL term against its definition (Monte Carlo) and finite differences, shapes,
training on a toy set, checkpoints and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from op_testing import arrays, check_op

import autograd
from tinydiff.vae import (
    VAE,
    VAEConfig,
    evaluate_vae,
    kl_divergence,
    load_vae,
    reconstruct,
    sample_posterior,
    save_vae,
    train_vae,
    vae_loss,
)

# A VAE small enough for float64 gradient checks: 6x6 images padded to 8x8, latent (2, 4, 4).
TOY = VAEConfig(image_size=6, padded_size=8, base_channels=4, channel_mult=(1, 2),
                latent_channels=2, norm_groups=2)


def toy_images(count: int, seed: int = 0) -> np.ndarray:
    """Blobs on a -1 background, in [-1, 1]: (count, 1, 6, 6) float32."""
    rng = np.random.default_rng(seed)
    images = -np.ones((count, 1, 6, 6), np.float32)
    for image, (row, column) in zip(images, rng.integers(0, 4, size=(count, 2))):
        image[0, row:row + 3, column:column + 2] = 1.0
    return images


def test_kl_is_zero_for_the_prior_and_matches_the_closed_form_per_example():
    zero = kl_divergence(autograd.zeros(3, 2, 4, 4), autograd.zeros(3, 2, 4, 4))
    assert zero.shape == (3,)
    np.testing.assert_array_equal(zero.numpy(), 0.0)
    # one dim with mean 2, variance e: 0.5 * (4 + e - 1 - 1)
    mean, logvar = np.zeros((1, 5)), np.zeros((1, 5))
    mean[0, 3], logvar[0, 3] = 2.0, 1.0
    value = kl_divergence(autograd.Tensor(mean), autograd.Tensor(logvar)).item()
    assert value == pytest.approx(0.5 * (4 + np.e - 2), rel=1e-12)


def test_kl_matches_a_monte_carlo_estimate():
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated with 400,000 draws per dim."""
    rng = np.random.default_rng(0)
    mean = rng.uniform(-2, 2, (2, 3))
    logvar = rng.uniform(-2, 1.5, (2, 3))
    samples = 400_000
    z = mean + np.exp(logvar / 2) * rng.standard_normal((samples, 2, 3))
    log_q = -0.5 * (np.log(2 * np.pi) + logvar + (z - mean) ** 2 / np.exp(logvar))
    log_p = -0.5 * (np.log(2 * np.pi) + z ** 2)
    per_draw = (log_q - log_p).sum(axis=2)  # (samples, 2)
    estimate = per_draw.mean(axis=0)
    standard_error = per_draw.std(axis=0) / np.sqrt(samples)
    exact = kl_divergence(autograd.Tensor(mean), autograd.Tensor(logvar)).numpy()
    assert np.all(np.abs(estimate - exact) < 5 * standard_error), (estimate, exact)


@given(data=st.data(), shape=st.sampled_from([(1, 1), (2, 3), (2, 2, 2, 2), (3, 1, 1, 4)]))
def test_kl_gradient_matches_finite_differences(data, shape):
    mean, logvar = data.draw(arrays(shape)), data.draw(arrays(shape, low=-3, high=2))
    check_op(kl_divergence, mean, logvar)


@given(data=st.data())
def test_posterior_sample_is_reparameterised(data):
    mean, logvar = data.draw(arrays((2, 3))), data.draw(arrays((2, 3), low=-3, high=2))
    check_op(lambda m, v: sample_posterior(m, v, np.random.default_rng(5)), mean, logvar)
    draws = sample_posterior(autograd.Tensor(np.zeros((20_000, 2))),
                             autograd.Tensor(np.log([[0.25, 4.0]] * 20_000)),
                             np.random.default_rng(0)).numpy()
    np.testing.assert_allclose(draws.std(axis=0), [0.5, 2.0], rtol=0.03)


def test_kl_errors():
    with pytest.raises(ValueError, match="must have one shape"):
        kl_divergence(autograd.zeros(2, 3), autograd.zeros(2, 4))


def test_default_shapes_round_trip():
    vae = VAE()
    assert vae.config.latent_shape == (4, 8, 8)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)
    with autograd.no_grad():
        mean, logvar = vae.encode(x)
        out = vae.decode(mean)
        forward, _, _ = vae(x, np.random.default_rng(0))
    assert mean.shape == logvar.shape == (2, 4, 8, 8)
    assert out.shape == forward.shape == (2, 1, 28, 28) and out.dtype == np.float32
    assert reconstruct(vae, x, batch_size=1).shape == (2, 1, 28, 28)


def test_whole_vae_gradient_in_float64():
    autograd.manual_seed(0)
    vae = VAE(TOY).double()
    x = toy_images(2).astype(np.float64)
    eps = np.random.default_rng(1).standard_normal((2, 2, 4, 4))

    def round_trip(images):
        mean, logvar = vae.encode(images)
        return vae.decode(mean + (logvar * 0.5).exp() * autograd.Tensor(eps))

    assert autograd.gradcheck_directional(round_trip, [autograd.Tensor(x, requires_grad=True)],
                                          directions=3)


def test_loss_decreases_and_training_is_reproducible():
    images = toy_images(32)
    vae, history = train_vae(images, steps=60, batch_size=8, lr=3e-3, kl_weight=1e-2,
                             seed=3, progress=False, config=TOY)
    assert not vae.training
    assert np.mean(history["loss"][-10:]) < 0.5 * np.mean(history["loss"][:5])
    assert len(history["kl"]) == 60 and history["seconds"][-1] > 0
    again, _ = train_vae(images, steps=60, batch_size=8, lr=3e-3, kl_weight=1e-2, seed=3,
                         progress=False, config=TOY)
    for (name, a), (_, b) in zip(vae.state_dict().items(), again.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_loss_is_reconstruction_plus_weighted_kl():
    autograd.manual_seed(0)
    vae = VAE(TOY)
    images = toy_images(4)
    loss, reconstruction, kl = vae_loss(vae, images, np.random.default_rng(0), 0.25)
    mean, logvar = vae.encode(images)
    z = sample_posterior(mean, logvar, np.random.default_rng(0))
    squared = ((vae.decode(z).numpy() - images) ** 2).sum() / 4
    assert reconstruction == pytest.approx(squared, rel=1e-5)
    assert kl == pytest.approx(kl_divergence(mean, logvar).numpy().mean(), rel=1e-5)
    assert loss.item() == pytest.approx(reconstruction + 0.25 * kl, rel=1e-5)


def test_save_and_load_round_trip(tmp_path):
    autograd.manual_seed(1)
    vae = VAE(TOY)
    path = save_vae(vae, tmp_path / "sub" / "vae.npz")
    loaded = load_vae(path)
    assert loaded.config == TOY and not loaded.training
    images = toy_images(3)
    with autograd.no_grad():
        for a, b in zip(vae.encode(images), loaded.encode(images)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not list(tmp_path.joinpath("sub").glob("*.tmp"))  # written atomically


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no VAE at"):
        load_vae(tmp_path / "missing.npz")
    autograd.save({"format": "something-else"}, tmp_path / "other.npz")
    with pytest.raises(ValueError, match="not a tinydiff VAE.*something-else"):
        load_vae(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        load_vae(tmp_path / "broken.npz")
    vae = VAE(TOY)
    with pytest.raises(ValueError, match=r"expects images \(N, 1, 6, 6\)"):
        vae.encode(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"expects latents \(N, 2, 4, 4\)"):
        vae.decode(np.zeros((2, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="even margin"):
        VAEConfig(image_size=28, padded_size=31)
    with pytest.raises(ValueError, match="divisible by 4"):
        VAEConfig(image_size=28, padded_size=30)
    with pytest.raises(ValueError, match="steps >= 1"):
        train_vae(toy_images(8), steps=0, config=TOY)
    assert VAEConfig.from_dict(TOY.to_dict()) == TOY


def test_evaluate_vae_reports_pixel_mse_and_kl_per_latent_value():
    autograd.manual_seed(2)
    vae = VAE(TOY)
    images = toy_images(5)
    scores = evaluate_vae(vae, images, batch_size=2)
    with autograd.no_grad():
        mean, logvar = vae.encode(images)
        expected_kl = kl_divergence(mean, logvar).numpy().mean() / (2 * 4 * 4)
    assert scores["mse"] == pytest.approx(np.mean((reconstruct(vae, images) - images) ** 2),
                                          rel=1e-5)
    assert scores["kl_per_dim"] == pytest.approx(expected_kl, rel=1e-5)
