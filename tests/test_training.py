"""The trainer: it learns, checkpoints atomically, resumes bit-exactly, stops on NaN."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_testing import num_threads
from training_testing import micro_config

import autograd
from tinydiff.training import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    load_for_sampling,
    read_checkpoint,
)


def flat_weights(trainer: Trainer) -> dict[str, np.ndarray]:
    state = trainer.state_dict()
    arrays = {f"model/{k}": v.numpy() for k, v in state["model"].items()}
    arrays.update({f"ema/{i}": s for i, s in enumerate(state["ema"]["shadow_params"])})
    for index, entry in state["optimizer"]["state"].items():
        arrays[f"adam/{index}"] = entry["exp_avg_sq"]
    return arrays


RESUME_CASES = {
    "unconditional": dict(class_conditional=False),
    "conditional": dict(class_conditional=True),
    # 4 timesteps x 10 losses: the importance sampler warms up at step 5, before the split
    "learned variance, importance-sampled t": dict(
        variance_type="learned_range", timestep_sampler="loss-second-moment",
        num_train_timesteps=4, steps=8, checkpoint_every=6),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_continues_bit_exactly(tmp_path, digits, case):
    images, labels = digits
    settings = RESUME_CASES[case]
    total = settings.get("steps", 4)
    straight = Trainer(micro_config(**settings), images, labels)
    straight.train(tmp_path / "straight", progress=False)

    first = Trainer(micro_config(**{**settings, "steps": total - 2}), images, labels)
    first.train(tmp_path / "split", progress=False)
    resumed = Trainer.resume(tmp_path / "split" / "ckpt.npz", images, labels, steps=total)
    assert resumed.step == total - 2
    resumed.train(tmp_path / "split", progress=False)
    if resumed.timestep_sampler is not None:
        assert resumed.timestep_sampler.warmed_up()
        np.testing.assert_array_equal(resumed.timestep_sampler.loss_history,
                                      straight.timestep_sampler.loss_history)

    a, b = flat_weights(straight), flat_weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert straight.history["loss"] == resumed.history["loss"]


def test_checkpoint_holds_everything_to_sample(tmp_path, digits):
    trainer = Trainer(micro_config(keep_checkpoints=True), *digits)
    trainer.train(tmp_path, progress=False)
    for name in ("ckpt.npz", "ckpt-0000002.npz", "ckpt-0000004.npz", "loss.csv", "loss.png"):
        assert (tmp_path / name).exists(), name
    state = read_checkpoint(tmp_path / "ckpt.npz")
    assert state["step"] == 4 and state["prediction_type"] == "epsilon"
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,lr" and len(lines) == 5
    model, schedule, prediction_type, _ = load_for_sampling(tmp_path / "ckpt.npz")
    for p, shadow in zip(model.parameters(), trainer.ema.shadow_params):
        np.testing.assert_array_equal(p.numpy(), shadow)
    assert schedule.num_train_timesteps == 1000 and not model.training


def test_training_reduces_the_loss(digits):
    trainer = Trainer(micro_config(steps=40, lr=3e-3, warmup_steps=5), *digits)
    losses = [trainer.train_step() for _ in range(40)]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, digits):
    trainer = Trainer(micro_config(), *digits)
    trainer.train(tmp_path, steps=2, progress=False)
    saved = (tmp_path / "ckpt.npz").read_bytes()
    with autograd.no_grad():
        trainer.model.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="nan at step 3"):
        trainer.train(tmp_path, progress=False)
    assert (tmp_path / "ckpt.npz").read_bytes() == saved


def test_worker_threads_do_not_change_the_result(digits):
    runs = [Trainer(micro_config(steps=3, batch_slices=2), *digits, workers=workers)
            for workers in (1, 2)]
    for trainer in runs:
        for _ in range(3):
            trainer.train_step()
    a, b = (flat_weights(trainer) for trainer in runs)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_the_slice_count_changes_a_step_only_by_rounding(digits):
    # The draws (t, noise, dropped labels) are the batch's whatever its slices (3: uneven
    # parts of 8, each loss weighted by its share), so the loss and the gradient agree to
    # float32 rounding; the first Adam step is not compared (it follows sign(grad)).
    runs = [Trainer(micro_config(steps=1, batch_slices=slices), *digits, workers=2)
            for slices in (1, 2, 3)]
    losses = [float(trainer.train_step()) for trainer in runs]
    np.testing.assert_allclose(losses[1:], [losses[0]] * 2, rtol=1e-6)
    for other in runs[1:]:
        for mine, theirs in zip(runs[0].parameters, other.parameters):
            scale = np.abs(mine.grad.numpy()).max()
            np.testing.assert_allclose(theirs.grad.numpy(), mine.grad.numpy(), rtol=1e-4,
                                       atol=1e-5 * scale)


def test_by_default_a_slice_per_worker_recorded_for_resuming(tmp_path, digits):
    for workers, batch_size, expected in ((1, 8, 1), (2, 8, 2), (4, 2, 2)):
        trainer = Trainer(micro_config(batch_size=batch_size), *digits, workers=workers)
        assert trainer.config.batch_slices == expected
    trainer = Trainer(micro_config(steps=2), *digits, workers=2)
    trainer.train(tmp_path, progress=False)
    assert read_checkpoint(tmp_path / "ckpt.npz")["train_config"]["batch_slices"] == 2
    with num_threads(1):  # a fresh trainer here would take one slice
        resumed = Trainer.resume(tmp_path / "ckpt.npz", *digits, steps=4)
    assert resumed.config.batch_slices == 2


def test_bad_configs_are_rejected():
    for slices in (0, 9):
        with pytest.raises(ValueError, match="batch_slices must be None or between 1 and"):
            TrainConfig(batch_size=8, batch_slices=slices)
    for lr in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr must be a positive finite number"):
            TrainConfig(lr=lr)
    with pytest.raises(ValueError, match="grad_clip must be a finite number >= 0"):
        TrainConfig(grad_clip=float("nan"))
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="variance_type"):
        TrainConfig(variance_type="learned")
    with pytest.raises(ValueError, match="timestep_sampler"):
        TrainConfig(timestep_sampler="importance")
