"""Bad inputs to the command line and the trainer: each gives one clear error line (exit 2
for arguments, 1 otherwise) before any long work, and nothing on disk is lost."""

from __future__ import annotations

import os
import signal
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from training_testing import micro_config

import autograd
import tinydiff.training as training
from autograd.files import is_temporary, remove_stale_temporaries
from tinydiff.cli import main
from tinydiff.training import NonFiniteLossError, Trainer, read_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    """A 1-step micro run's ckpt.npz (unconditional)."""
    run = tmp_path_factory.mktemp("run")
    Trainer(micro_config(steps=1, class_conditional=False), *digits).train(run, progress=False)
    return run / "ckpt.npz"


@pytest.fixture
def small_mnist(monkeypatch, digits):
    """`train` from the command line on the 64 test digits instead of all of MNIST."""
    monkeypatch.setattr(training, "load_mnist", lambda split, data_dir=None: digits)


def edited_checkpoint(source, target, edit):
    """A copy of the checkpoint at `source`, changed by `edit(state)`, saved at `target`."""
    state = autograd.load(source)
    edit(state)
    autograd.save(state, target)
    return target


def error_of(argv, capsys, code=1) -> str:
    """The stderr of `tinydiff ARGV`, after checking its exit status and that it is one
    `tinydiff COMMAND: error: ...` line."""
    if code == 2:
        with pytest.raises(SystemExit) as exit_info:
            result = main(argv)
            raise SystemExit(result)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == code
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"tinydiff {argv[0]}: error: "), err
    assert "Traceback" not in err
    return last


TRAIN = ["train", "--preset", "micro", "--batch-size", "8", "--sample-n", "0", "--no-progress"]


# ---- data loss ----------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--npz", "--out", "--trajectory"])
def test_sample_refuses_to_overwrite_its_checkpoint(checkpoint, capsys, option):
    before = checkpoint.read_bytes()
    alias = checkpoint.parent / "." / checkpoint.name  # the same file by another spelling
    extra = ["--out", str(checkpoint.parent / "g.png")] if option != "--out" else []
    error = error_of(["sample", "--ckpt", str(checkpoint), *extra, option, str(alias)],
                     capsys, code=2)
    assert "same file as --ckpt" in error
    assert checkpoint.read_bytes() == before


def test_sample_refuses_two_outputs_in_one_file(checkpoint, tmp_path, capsys):
    grid = str(tmp_path / "g.png")
    error = error_of(["sample", "--ckpt", str(checkpoint), "--out", grid, "--trajectory",
                      grid], capsys, code=2)
    assert "--trajectory" in error and "same file as --out" in error


# ---- paths --------------------------------------------------------------------------------


def test_unusable_output_paths(checkpoint, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    sample = ["sample", "--ckpt", str(checkpoint)]
    assert "is a folder; expected a file" in error_of([*sample, "--out", str(tmp_path)], capsys)
    assert "is a file, not a folder" in error_of(
        [*sample, "--out", str(a_file / "grid.png")], capsys)
    assert "cannot write an image of type 'npz'" in error_of(
        [*sample, "--out", str(tmp_path / "grid.npz")], capsys)
    assert "'(no extension)'" in error_of(
        ["plot-schedule", "--out", str(tmp_path / "schedules")], capsys)
    assert "is a file; expected a folder" in error_of([*TRAIN, "--out", str(a_file)], capsys)
    assert not list(tmp_path.glob("*.png"))


def test_unreadable_data_dir(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for data_dir, expected in ((tmp_path / "missing", "no such folder"),
                               (tmp_path / "file", "is a file; expected a folder")):
        error = error_of([*TRAIN, "--out", str(tmp_path / "run"), "--data-dir", str(data_dir)],
                         capsys)
        assert expected in error
    assert not (tmp_path / "run").exists()


def test_eval_samples_without_samples(tmp_path, capsys):
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 1, 28, 28)))
    assert "has no 'samples' array (it has images)" in error_of(
        ["eval", "--samples", str(tmp_path / "other.npz")], capsys)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert "not a readable .npz" in error_of(["eval", "--samples", str(tmp_path / "bad.npz")],
                                             capsys)


# ---- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["train", "--out", "x", "--lr", "inf"], "--lr: must be a finite number"),
    (["train", "--out", "x", "--lr", "nan"], "--lr: must be a finite number"),
    (["train", "--out", "x", "--steps", "0"], "--steps: must be a positive integer"),
    (["train", "--out", "x", "--grad-clip", "nan"], "--grad-clip: must be a finite number"),
    (["sample", "--ckpt", "c.npz", "--guidance", "nan"], "--guidance: must be a finite"),
    (["eval", "--ckpt", "c.npz", "--guidance", "inf"], "--guidance: must be a finite"),
    (["sample", "--ckpt", "c.npz", "--threads", "1000"], "--threads: must be in 1.."),
])
def test_bad_numbers_are_argument_errors(argv, expected, capsys):
    assert expected in error_of(argv, capsys, code=2)


# ---- checkpoints --------------------------------------------------------------------------


def test_checkpoint_without_ema_says_try_no_ema(checkpoint, tmp_path, capsys):
    no_ema = edited_checkpoint(checkpoint, tmp_path / "c.npz", lambda s: s.pop("ema"))
    error = error_of(["sample", "--ckpt", str(no_ema), "--out", str(tmp_path / "g.png")],
                     capsys)
    assert "no EMA weights; try --no-ema" in error


@pytest.mark.parametrize("damage, expected", [
    (lambda s: s["model"].pop("conv_out.bias"), "missing keys: conv_out.bias"),
    (lambda s: s["model"].update({"conv_out.bias": np.zeros(3, np.float32)}),
     "conv_out.bias: checkpoint shape (3,)"),
    (lambda s: s["ema"]["shadow_params"].pop(), "EMA state_dict's parameter shapes"),
    (lambda s: s.pop("model_config"), "damaged: it has no model_config entry"),
])
def test_damaged_weights(checkpoint, tmp_path, capsys, damage, expected):
    damaged = edited_checkpoint(checkpoint, tmp_path / "c.npz", damage)
    error = error_of(["sample", "--ckpt", str(damaged), "--out", str(tmp_path / "g.png")],
                     capsys)
    assert expected in error
    assert not (tmp_path / "g.png").exists()


def test_unreadable_checkpoint_files(checkpoint, tmp_path, capsys):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(100))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __manifest__=np.array([{"a": 1}], dtype=object))
    for path in (truncated, corrupt, pickled):
        error = error_of(["sample", "--ckpt", str(path), "--out", str(tmp_path / "g.png")],
                         capsys)
        assert "not a readable autograd.save file" in error, path


def test_non_finite_checkpoint_is_refused(checkpoint, tmp_path, capsys, small_mnist):
    def poison(state):
        state["model"]["conv_out.bias"].data[0] = np.nan

    run = tmp_path / "run"
    bad = edited_checkpoint(checkpoint, run / "ckpt.npz", poison)
    for argv in (["sample", "--ckpt", str(bad), "--out", str(tmp_path / "g.png")],
                 ["sample", "--ckpt", str(bad), "--no-ema", "--out", str(tmp_path / "g.png")],
                 ["eval", "--ckpt", str(bad), "--n", "1", "--steps", "1"],
                 [*TRAIN, "--out", str(run), "--resume", "--steps", "3"]):
        assert "model/conv_out.bias holds NaN or infinite values" in error_of(argv, capsys)
    assert not (tmp_path / "g.png").exists()


# ---- training -----------------------------------------------------------------------------


def test_weights_that_become_non_finite_are_not_saved(tmp_path, digits):  # noqa: F811
    """The loss of a step is computed before its update: an update that makes a weight
    infinite must still keep the last good checkpoint."""
    trainer = Trainer(micro_config(checkpoint_every=1), *digits)
    trainer.train(tmp_path, steps=1, progress=False)
    saved = (tmp_path / "ckpt.npz").read_bytes()
    step = trainer.optimizer.step

    def overflowing_step():
        step()
        trainer.parameters[0].data[...] = np.inf

    trainer.optimizer.step = overflowing_step
    with pytest.raises(NonFiniteLossError,
                       match=r"model/.* became NaN or infinite by step 2.*checkpoint \(step 1\)"):
        trainer.train(tmp_path, steps=2, progress=False)
    assert (tmp_path / "ckpt.npz").read_bytes() == saved


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_huge_learning_rate_keeps_only_finite_checkpoints(tmp_path, capsys, small_mnist):
    run = tmp_path / "run"
    error = error_of([*TRAIN, "--out", str(run), "--lr", "1e30", "--steps", "4",
                      "--checkpoint-every", "1", "--warmup-steps", "0"], capsys)
    assert "training stopped and" in error and "Try a lower --lr" in error
    if (run / "ckpt.npz").exists():
        state = read_checkpoint(run / "ckpt.npz")
        training.require_finite(state, run / "ckpt.npz", training.WEIGHT_ENTRIES)
        assert f"(step {state['step']}) was kept" in error


def test_resume_refuses_options_that_differ(checkpoint, capsys, small_mnist):
    resume = [*TRAIN, "--out", str(checkpoint.parent), "--resume", "--steps", "3"]
    error = error_of([*resume, "--lr", "0.1", "--preset", "mnist-tiny", "--class-conditional"],
                     capsys, code=2)
    assert "--lr 0.1 (the checkpoint has 0.002)" in error
    assert "--preset mnist-tiny (the checkpoint has micro)" in error
    assert "--class-conditional (the checkpoint has no-class-conditional)" in error
    error = error_of([*TRAIN, "--out", str(checkpoint.parent), "--resume", "--steps", "1"],
                     capsys, code=2)
    assert "already at step 1; pass a larger --steps" in error


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_progress_and_stops(tmp_path, capsys, small_mnist, monkeypatch,
                                               signal_number):
    step = Trainer.train_step

    def step_then_signal(self):
        loss = step(self)
        if self.step == 3:
            os.kill(os.getpid(), signal_number)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    handler = signal.getsignal(signal_number)
    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run), "--steps", "1000", "--checkpoint-every",
                 "1000"]) == 130
    name = signal.Signals(signal_number).name
    assert f"stopped by {name} at step 3; saved {run / 'ckpt.npz'} (step 3)" in \
        capsys.readouterr().err
    assert read_checkpoint(run / "ckpt.npz")["step"] == 3
    assert len((run / "loss.csv").read_text().splitlines()) == 4
    assert signal.getsignal(signal_number) == handler  # restored


# ---- atomic writes ------------------------------------------------------------------------


def test_a_failed_save_leaves_the_old_file_and_no_temporary(checkpoint, tmp_path, monkeypatch):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(checkpoint.read_bytes())

    def dies_half_way(file, **arrays):
        file.write(b"PK half a file")
        raise KeyboardInterrupt  # as a kill during the save would stop it

    monkeypatch.setattr(np, "savez", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        autograd.save({"x": np.zeros(3)}, target)
    assert target.read_bytes() == checkpoint.read_bytes()
    assert sorted(tmp_path.iterdir()) == [target]


def test_temporaries_of_a_killed_save_are_removed_at_the_next_run(tmp_path, small_mnist):
    run = tmp_path / "run"
    run.mkdir()
    descriptor, name = tempfile.mkstemp(prefix=".ckpt.npz.", suffix=".tmp", dir=run)
    os.close(descriptor)  # what a SIGKILL during a save leaves behind
    stale = Path(name)
    assert is_temporary(stale)
    (run / ".hidden.tmp").write_text("not ours")
    assert main([*TRAIN, "--out", str(run), "--steps", "1"]) == 0
    assert not stale.exists() and (run / ".hidden.tmp").exists()
    assert not [path for path in run.iterdir() if is_temporary(path)]
    assert remove_stale_temporaries(run) == []
    for name in ("ckpt.npz", "loss.csv", "loss.png"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert zipfile.is_zipfile(run / "ckpt.npz")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
