"""Diffusion on a device: the trainer, the losses, the samplers, checkpoints and the command
line give on "cuda" what they give on the CPU, and a training step never reads from the GPU.

On a machine without a GPU the "cuda" legs run on the simulated CuPy (tests/fake_cupy.py),
whose kernels are the reference implementations; a real GPU runs the CUDA kernels (then the
tolerances below absorb float32 reassociation)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import training_testing
from fake_cupy import simulated_cuda, transfers

import autograd
from autograd.backend import CPU, to_device
from tinydiff.cli import main
from tinydiff.diffusion import training_losses, variational_bound
from tinydiff.models import build_model
from tinydiff.samplers import sample
from tinydiff.schedules import NoiseSchedule
from tinydiff.training import Trainer, load_for_sampling

TOLERANCE = dict(rtol=2e-4, atol=2e-5)  # after a few float32 Adam steps


# Shorter runs than the trainer tests' (MICRO_RUN): one warmup step, a checkpoint at the end.
micro_config = functools.partial(training_testing.micro_config, steps=3, warmup_steps=1,
                                 checkpoint_every=3)


def host_weights(trainer: Trainer) -> dict[str, np.ndarray]:
    """Model, EMA and Adam arrays of a trainer on any device, as host arrays."""
    arrays = {f"model/{name}": p.cpu().numpy() for name, p in
              trainer.model.state_dict().items()}
    arrays.update({f"ema/{i}": to_device(s, CPU) for i, s in
                   enumerate(trainer.ema.shadow_params)})
    for index, parameter in enumerate(trainer.parameters):
        arrays[f"adam/{index}"] = to_device(trainer.optimizer.state[parameter]["exp_avg_sq"],
                                            CPU)
    return arrays


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], err_msg=key, **TOLERANCE)


@pytest.mark.parametrize("settings", [dict(batch_slices=1), dict(batch_slices=2),
                                      dict(variance_type="learned_range",
                                           timestep_sampler="loss-second-moment",
                                           num_train_timesteps=4, batch_slices=1)],
                         ids=["one slice", "two slices", "learned variance"])
def test_training_on_the_device_matches_the_cpu(gpu_device, digits, settings):
    cpu = Trainer(micro_config(**settings), *digits)
    device = Trainer(micro_config(**settings), *digits, device=gpu_device)
    assert device.model.device == gpu_device and cpu.model.device == "cpu"
    cpu_losses = [float(cpu.train_step()) for _ in range(3)]
    device_losses = [float(device.train_step()) for _ in range(3)]
    np.testing.assert_allclose(device_losses, cpu_losses, **TOLERANCE)
    assert_same_weights(host_weights(device), host_weights(cpu))


def test_a_training_step_never_reads_from_the_device(digits):
    with simulated_cuda():
        trainer = Trainer(micro_config(grad_clip=1.0), *digits, device="cuda")
        trainer.train_step()  # first step: optimizer state created
        before = transfers["to_host"]
        losses = [trainer.train_step() for _ in range(2)]
        assert transfers["to_host"] == before, "a training step copied from the device"
        assert all(loss.device == "cuda" for loss in losses)
        trainer.read_losses()  # one transfer for all the losses not yet read
        assert transfers["to_host"] == before + 1
        assert trainer.history["step"] == [1, 2, 3]


def test_a_nan_loss_on_the_device_stops_before_the_checkpoint(gpu_device, digits, tmp_path):
    from tinydiff.training import NonFiniteLossError

    trainer = Trainer(micro_config(steps=4, checkpoint_every=2), *digits, device=gpu_device)
    trainer.train(tmp_path, steps=2, progress=False)
    saved = (tmp_path / "ckpt.npz").read_bytes()
    with autograd.no_grad():
        trainer.model.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="nan at step 3"):
        trainer.train(tmp_path, progress=False)
    assert (tmp_path / "ckpt.npz").read_bytes() == saved


def test_checkpoints_move_between_devices(gpu_device, digits, tmp_path):
    trained = Trainer(micro_config(steps=2, checkpoint_every=2), *digits, device=gpu_device)
    trained.train(tmp_path / "gpu", progress=False)
    model, _, _, _ = load_for_sampling(tmp_path / "gpu" / "ckpt.npz")
    assert model.device == "cpu"
    for p, shadow in zip(model.parameters(), trained.ema.shadow_params):
        np.testing.assert_array_equal(p.numpy(), to_device(shadow, CPU))
    # resume on the CPU what the device trained, and on the device what the CPU trained
    straight = Trainer(micro_config(steps=3), *digits)
    straight.train(tmp_path / "straight", progress=False)
    on_cpu = Trainer.resume(tmp_path / "gpu" / "ckpt.npz", *digits, steps=3)
    on_cpu.train(tmp_path / "gpu", progress=False)
    assert_same_weights(host_weights(on_cpu), host_weights(straight))
    first = Trainer(micro_config(steps=2, checkpoint_every=2), *digits)
    first.train(tmp_path / "cpu", progress=False)
    on_device = Trainer.resume(tmp_path / "cpu" / "ckpt.npz", *digits, device=gpu_device,
                               steps=3)
    assert on_device.model.device == gpu_device and on_device.step == 2
    on_device.train(tmp_path / "cpu", progress=False)
    assert_same_weights(host_weights(on_device), host_weights(straight))


@pytest.mark.parametrize("sampler, options", [
    ("ddim", dict(num_inference_steps=4)),
    ("ddim", dict(num_inference_steps=4, eta=0.5, guidance_scale=2.0,
                  null_cond={"class_labels": 10}, class_labels=np.arange(3))),
    ("ddpm", dict(num_inference_steps=5, return_trajectory=True)),
])
def test_sampling_on_the_device_matches_the_cpu(gpu_device, sampler, options):
    autograd.manual_seed(3)
    model = build_model("micro", num_classes=10)
    model.eval()
    schedule = NoiseSchedule(1000)

    def run(device):
        model.to(device)
        with autograd.no_grad():
            return sample(model, schedule, (3, 1, 28, 28), sampler=sampler, seed=7, **options)

    on_cpu, on_device = run("cpu"), run(gpu_device)
    if isinstance(on_cpu, tuple):
        np.testing.assert_allclose(on_device[1].samples, on_cpu[1].samples, **TOLERANCE)
        on_cpu, on_device = on_cpu[0], on_device[0]
    assert isinstance(on_device, np.ndarray)
    np.testing.assert_allclose(on_device, on_cpu, **TOLERANCE)


def test_losses_and_the_bound_on_the_device_match_the_cpu(gpu_device, digits):
    autograd.manual_seed(0)
    model = build_model("micro", out_channels=2)
    schedule = NoiseSchedule(8)
    x0 = digits[0][:4]

    def losses(device):
        model.to(device)
        terms = training_losses(model, schedule, to_device(x0, device),
                                np.random.default_rng(1), variance_type="learned_range",
                                loss_weighting="min_snr")
        with autograd.no_grad():
            bound = variational_bound(model, schedule, to_device(x0, device),
                                      np.random.default_rng(2),
                                      variance_type="learned_range")
        return float(terms.loss), to_device(terms.per_sample, CPU), bound.total

    for got, expected in zip(losses(gpu_device), losses("cpu")):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_the_command_line_trains_and_samples_on_the_device(tmp_path):
    with simulated_cuda():
        run = tmp_path / "run"
        assert main(["train", "--out", str(run), "--preset", "micro", "--steps", "2",
                     "--batch-size", "4", "--sample-n", "2", "--no-progress",
                     "--device", "cuda"]) == 0
        assert (run / "samples.png").exists()
        assert main(["sample", "--ckpt", str(run / "ckpt.npz"), "--steps", "2", "--n", "2",
                     "--out", str(tmp_path / "gpu.png"), "--npz", str(tmp_path / "gpu.npz"),
                     "--device", "cuda"]) == 0
    # the GPU-trained checkpoint samples on the CPU, with the same result
    assert main(["sample", "--ckpt", str(run / "ckpt.npz"), "--steps", "2", "--n", "2",
                 "--out", str(tmp_path / "cpu.png"), "--npz", str(tmp_path / "cpu.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "gpu.npz")["samples"],
                               np.load(tmp_path / "cpu.npz")["samples"], **TOLERANCE)


def test_the_command_line_rejects_an_unusable_device(tmp_path, capsys, monkeypatch):
    from autograd import backend

    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path), "--device", "gpu"])
    assert "unknown device 'gpu'" in capsys.readouterr().err
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_problem", "CuPy is not installed")
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt", str(tmp_path / "c.npz"), "--device", "cuda"])
    assert "device 'cuda' is not available: CuPy is not installed" in capsys.readouterr().err


def test_training_and_sampling_on_the_emulated_cuda_kernels_match_the_cpu(digits):
    """The whole step through the CUDA C sources themselves (tests/cuda_emulator.py runs
    them on the CPU): conv, GroupNorm + SiLU, softmax, SiLU and the fused AdamW kernels."""
    import cuda_emulator

    if not cuda_emulator.available():
        pytest.skip("the CUDA emulator needs g++")
    images, labels = digits[0][:8], digits[1][:8]
    config = micro_config(batch_size=4, batch_slices=1)
    cpu = Trainer(config, images, labels)
    cpu_loss = float(cpu.train_step())
    with cuda_emulator.emulated_cuda():
        emulated = Trainer(config, images, labels, device="cuda")
        np.testing.assert_allclose(float(emulated.train_step()), cpu_loss, **TOLERANCE)
        assert_same_weights(host_weights(emulated), host_weights(cpu))
        with autograd.no_grad():
            emulated.model.eval()
            on_device = sample(emulated.model, emulated.schedule, (2, 1, 28, 28),
                               num_inference_steps=2, seed=0, class_labels=np.arange(2))
    with autograd.no_grad():
        on_cpu = sample(cpu.model.eval(), cpu.schedule, (2, 1, 28, 28),
                        num_inference_steps=2, seed=0, class_labels=np.arange(2))
    np.testing.assert_allclose(on_device, on_cpu, **TOLERANCE)
