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
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path), "--steps", "-3"])
    assert exit_info.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err
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
