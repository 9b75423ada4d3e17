"""The command line end to end on the micro model, and its errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tinydiff.cli import main


def test_train_then_sample(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), "--preset", "micro", "--steps", "2",
                 "--batch-size", "4", "--checkpoint-every", "1", "--sample-n", "4",
                 "--no-progress"])
    assert code == 0
    for name in ("ckpt.npz", "loss.csv", "loss.png", "samples.png"):
        assert (run / name).exists(), name
    out = tmp_path / "grid.png"
    code = main(["sample", "--ckpt", str(run / "ckpt.npz"), "--steps", "3", "--n", "3",
                 "--out", str(out), "--npz", str(tmp_path / "s.npz"),
                 "--trajectory", str(tmp_path / "traj.png")])
    assert code == 0 and out.exists() and (tmp_path / "traj.png").exists()
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (3, 1, 28, 28) and np.all(np.abs(samples) <= 1)
    assert main(["train", "--out", str(run), "--preset", "micro", "--steps", "3",
                 "--batch-size", "4", "--resume", "--sample-n", "0", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out


def test_clear_errors(tmp_path, capsys):
    assert main(["sample", "--ckpt", str(tmp_path / "none.npz")]) == 1
    assert "no tinydiff checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path), "--steps", "-3"])
    assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train"])  # --out is required
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    assert main(["sample", "--ckpt", str(tmp_path / "bad.npz")]) == 1
    assert "corrupt" in capsys.readouterr().err


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "tinydiff", "--help"], capture_output=True,
                            text=True, check=True)
    assert "train" in result.stdout and "sample" in result.stdout


def test_class_conditional_sampling_saves_the_labels(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--preset", "micro", "--steps", "2",
                 "--batch-size", "4", "--class-conditional", "--sample-n", "0",
                 "--no-progress"]) == 0
    for extra, expected in (([], np.arange(12) % 10),
                            (["--class", "3", "--guidance", "2"], np.full(12, 3))):
        npz = tmp_path / "s.npz"
        assert main(["sample", "--ckpt", str(run / "ckpt.npz"), "--steps", "2", "--n", "12",
                     "--batch-size", "5", "--out", str(tmp_path / "g.png"), "--npz", str(npz),
                     *extra]) == 0
        with np.load(npz) as archive:
            np.testing.assert_array_equal(archive["labels"], expected)
            assert archive["samples"].shape == (12, 1, 28, 28)


def test_learned_variance_train_sample_and_bound(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--preset", "micro", "--steps", "2",
                 "--batch-size", "4", "--variance-type", "learned_range", "--sample-n", "0",
                 "--no-progress"]) == 0
    from tinydiff.training import checkpoint_variance_type, load_for_sampling

    model, _, _, state = load_for_sampling(run / "ckpt.npz")
    assert checkpoint_variance_type(state) == "learned_range" and model.config.out_channels == 2
    for sampler in ("ddpm", "ddim"):
        assert main(["sample", "--ckpt", str(run / "ckpt.npz"), "--sampler", sampler,
                     "--steps", "4", "--n", "2", "--out", str(tmp_path / f"{sampler}.png"),
                     "--npz", str(tmp_path / f"{sampler}.npz")]) == 0
        samples = np.load(tmp_path / f"{sampler}.npz")["samples"]
        assert samples.shape == (2, 1, 28, 28) and np.all(np.isfinite(samples))
    assert main(["eval", "--ckpt", str(run / "ckpt.npz"), "--n", "4", "--steps", "2",
                 "--nll-images", "1"]) == 0
    assert "bits/dim" in capsys.readouterr().out


def test_latent_diffusion_from_the_command_line(tmp_path, monkeypatch, capsys):
    import tinydiff.data as data
    from tinydiff.vae import save_vae, train_vae

    images, labels = data.load_mnist("train")
    small = images[:16], labels[:16]
    monkeypatch.setattr(data, "load_mnist", lambda split, data_dir=None: small)
    vae, _ = train_vae(small[0], steps=1, batch_size=4, progress=False)
    save_vae(vae, tmp_path / "vae.npz")
    run, common = tmp_path / "run", ["--batch-size", "4", "--no-progress"]
    assert main(["train", "--out", str(run), "--vae", str(tmp_path / "vae.npz"), "--steps",
                 "2", "--sample-n", "2", *common]) == 0
    assert (run / "latent.npz").exists() and (run / "samples.png").exists()
    assert main(["train", "--out", str(run), "--steps", "3", "--resume", "--sample-n", "0",
                 *common]) == 0
    assert "resuming" in capsys.readouterr().out
    assert main(["sample", "--ckpt", str(run / "ckpt.npz"), "--steps", "2", "--n", "3",
                 "--out", str(tmp_path / "s.png"), "--npz", str(tmp_path / "s.npz")]) == 0
    samples = np.load(tmp_path / "s.npz")["samples"]  # decoded: images, not latents
    assert samples.shape == (3, 1, 28, 28) and np.all(np.abs(samples) <= 1)
    assert main(["eval", "--ckpt", str(run / "ckpt.npz"), "--n", "2", "--steps", "1",
                 "--nll-images", "1"]) == 1
    assert "latent diffusion run" in capsys.readouterr().err
