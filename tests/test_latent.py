"""Latent diffusion on a toy VAE: encoding and scaling, the sidecar, train -> save -> resume
(bit-exactly) -> sample -> decode, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_vae import TOY, toy_images

import autograd
from tinydiff.latent import (
    SIDECAR,
    decode_latents,
    encode_dataset,
    latent_scale_factor,
    latent_trainer,
    load_latent_pipeline,
    read_sidecar,
    resume_latent_trainer,
    sample_latent_images,
)
from tinydiff.samplers import sample
from tinydiff.training import TrainConfig
from tinydiff.vae import VAE

# A UNet for the toy VAE's (2, 4, 4) latents with cross-attention at its 2x2 level.
UNET = dict(channel_mult=(1, 2), attention_levels=(1,), context_dim=8, context_tokens=2)


@pytest.fixture(scope="module")
def toy():
    autograd.manual_seed(0)
    return VAE(TOY), toy_images(16), np.arange(16) % 10


def config(**overrides) -> TrainConfig:
    settings = dict(model="micro", steps=4, batch_size=4, batch_slices=1, warmup_steps=1,
                    checkpoint_every=2)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_encoding_and_scale_factor(toy):
    vae, images, _ = toy
    latents = encode_dataset(vae, images, batch_size=5)
    assert latents.shape == (16, 2, 4, 4) and latents.dtype == np.float32
    with autograd.no_grad():
        np.testing.assert_array_equal(latents[:5], vae.encode(images[:5])[0].numpy())
    factor = latent_scale_factor(latents)
    assert np.std(latents * factor) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="standard deviation 0"):
        latent_scale_factor(np.ones((2, 3)))


def test_train_resume_sample_decode(toy, tmp_path):
    vae, images, labels = toy
    straight = latent_trainer(vae, images, labels, config(), tmp_path / "straight", **UNET)
    straight.train(tmp_path / "straight", progress=False)

    first = latent_trainer(vae, images, labels, config(steps=2), tmp_path / "split", **UNET)
    checkpoint = first.train(tmp_path / "split", progress=False)
    assert (tmp_path / "split" / SIDECAR).exists()
    stored_vae, factor = read_sidecar(checkpoint)
    assert factor == pytest.approx(latent_scale_factor(encode_dataset(vae, images)))
    for (name, a), (_, b) in zip(vae.state_dict().items(), stored_vae.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)

    resumed = resume_latent_trainer(checkpoint, images, labels, steps=4)
    assert resumed.step == 2 and resumed.model.config.context_dim == 8
    resumed.train(tmp_path / "split", progress=False)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(),
                                 resumed.model.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    assert straight.history["loss"] == resumed.history["loss"]

    pipeline = load_latent_pipeline(checkpoint)
    assert pipeline.model.config.in_channels == 2 and pipeline.scale_factor == factor
    requested = np.array([0, 1, 2])
    images_out = sample_latent_images(pipeline, requested, num_inference_steps=3, seed=0)
    assert images_out.shape == (3, 1, 6, 6) and images_out.dtype == np.float32
    assert images_out.min() >= -1 and images_out.max() <= 1
    # the same as sampling the latents with guidance 2 by hand, dividing by the factor, decoding
    with autograd.no_grad():
        latents = sample(pipeline.model, pipeline.schedule, (3, 2, 4, 4), num_inference_steps=3,
                         seed=0, clip_sample=False, class_labels=requested, guidance_scale=2.0,
                         null_cond={"class_labels": 10})
        expected = np.clip(pipeline.vae.decode(latents / np.float32(factor)).numpy(), -1, 1)
    np.testing.assert_array_equal(images_out, expected)
    np.testing.assert_allclose(decode_latents(pipeline, latents, batch_size=2), expected,
                               atol=1e-5)  # other batch sizes round differently
    unguided = sample_latent_images(pipeline, requested, guidance_scale=None,
                                    num_inference_steps=3, seed=0)
    assert not np.array_equal(unguided, images_out)


def test_errors(toy, tmp_path):
    vae, images, labels = toy
    with pytest.raises(FileNotFoundError, match="not a latent diffusion run"):
        read_sidecar(tmp_path / "ckpt.npz")
    autograd.save({"format": "other"}, tmp_path / SIDECAR)
    with pytest.raises(ValueError, match="not a latent-diffusion file"):
        load_latent_pipeline(tmp_path / "ckpt.npz")
    with pytest.raises(ValueError, match="needs num_classes"):  # cross-attention needs labels
        latent_trainer(vae, images, labels, config(class_conditional=False), tmp_path, **UNET)
    trainer = latent_trainer(vae, images, labels, config(steps=1), tmp_path / "run", **UNET)
    pipeline = load_latent_pipeline(trainer.train(tmp_path / "run", progress=False))
    with pytest.raises(ValueError, match="not neither"):
        sample_latent_images(pipeline)
    with pytest.raises(ValueError, match="not both"):
        sample_latent_images(pipeline, np.array([1]), count=1)
