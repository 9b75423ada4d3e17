"""Training a diffusion UNet: the recipe (`TrainConfig`), the loop (`Trainer`), and
checkpoints that hold everything needed to resume bit-exactly or to sample.

A checkpoint (`ckpt.npz`, written atomically by `autograd.save`) holds the model config and
weights, the EMA weights, optimizer and learning-rate state, the diffusion config, the data
order, every random generator's state, the step and the loss history. It is the same file
whatever device trained it (arrays are stored from the host), so a run trained on a GPU
samples or resumes on the CPU, and back.

On a GPU a training step never waits for the device: the loss stays there, and the loop reads
the losses of the last `LOSS_READ_EVERY` steps in one transfer (then checks they are finite,
records them and updates the progress bar), and before every checkpoint.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

import autograd
from autograd import nn, optim
from autograd.backend import CPU, Device, to_device
from autograd.files import atomic_write, remove_stale_temporaries
from autograd.kernels.threads import parts
from autograd.nn.parallel import Replicas
from autograd.optim import lr_scheduler
from autograd.random import default_generator
from tinydiff.data import BatchIterator, load_mnist
from tinydiff.diffusion import training_losses
from tinydiff.finite import first_non_finite
from tinydiff.interrupts import StopRequests, TrainingInterrupted
from tinydiff.models import UNet, build_model
from tinydiff.options import (
    BetaSchedule,
    LossWeighting,
    LrSchedule,
    Option,
    PredictionType,
    TimestepSampler,
    VarianceType,
)
from tinydiff.schedules import NoiseSchedule
from tinydiff.timestep_sampling import LossSecondMomentResampler

CHECKPOINT_FORMAT = "tinydiff-checkpoint-v1"
LOSS_READ_EVERY = 25  # steps between reads of the loss from the device (see the docstring)
# the checkpoint entries that must be finite to be saved, resumed or sampled from
WEIGHT_ENTRIES = ("model", "ema", "optimizer")


@dataclass
class TrainConfig:
    """The training recipe. Defaults are the measured default run (see README).

    The options (lr_schedule, prediction_type, loss_weighting, variance_type,
    timestep_sampler, beta_schedule) take a `tinydiff.options` member or its string and hold
    the member after construction; `to_dict` (what checkpoints store) gives plain strings."""

    model: str = "mnist-tiny"
    steps: int = 2400
    batch_size: int = 32
    # The batch's gradient is the sum of its slices' (near-equal contiguous parts, in order),
    # each slice's forward and backward on a worker thread of its own. None: one slice per
    # thread on the CPU (the fastest on 1 and 2 threads, see benchmarks/README.md), one on a
    # GPU. The Trainer records the number it used, so a resumed run keeps it. The random
    # draws do not depend on it: another count changes a run only by float rounding.
    batch_slices: int | None = None
    lr: float = 2e-3
    lr_schedule: LrSchedule | str = LrSchedule.CONSTANT
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_max_decay: float = 0.9999
    ema_power: float = 2 / 3
    prediction_type: PredictionType | str = PredictionType.EPSILON
    loss_weighting: LossWeighting | str = LossWeighting.MIN_SNR
    snr_gamma: float = 5.0
    # learned_range: the UNet also outputs the variance interpolation v, trained by improved
    # DDPM's hybrid loss L_simple + vlb_weight * L_vlb (lambda = 0.001 in the paper).
    variance_type: VarianceType | str = VarianceType.FIXED_SMALL
    vlb_weight: float = 0.001
    timestep_sampler: TimestepSampler | str = TimestepSampler.UNIFORM
    beta_schedule: BetaSchedule | str = BetaSchedule.LINEAR
    num_train_timesteps: int = 1000
    class_conditional: bool = True
    label_dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: bool = False
    data_dir: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 0:
            problems.append(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_slices is not None and not 1 <= self.batch_slices <= self.batch_size:
            problems.append(f"batch_slices must be None or between 1 and batch_size "
                            f"{self.batch_size}, got {self.batch_slices}")
        for name in ("lr", "ema_power", "snr_gamma"):
            if not 0 < getattr(self, name) < math.inf:
                problems.append(f"{name} must be a positive finite number, got "
                                f"{getattr(self, name)}")
        for name in ("weight_decay", "grad_clip"):
            if not 0 <= getattr(self, name) < math.inf:
                problems.append(f"{name} must be a finite number >= 0, got "
                                f"{getattr(self, name)}")
        if not 0 <= self.ema_max_decay <= 1:
            problems.append(f"ema_max_decay must be in [0, 1], got {self.ema_max_decay}")
        if not 0 <= self.label_dropout < 1:
            problems.append(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        for option in (LrSchedule, PredictionType, LossWeighting, VarianceType,
                       TimestepSampler, BetaSchedule):
            name = option.option_name()
            try:
                setattr(self, name, option.parse(getattr(self, name)))
            except ValueError as error:
                problems.append(str(error))
        if not 0 <= self.vlb_weight < math.inf:
            problems.append(f"vlb_weight must be a finite number >= 0, got {self.vlb_weight}")
        if self.checkpoint_every < 1:
            problems.append(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values: options as their plain strings (for checkpoints,
        readable without tinydiff)."""
        return {name: value.value if isinstance(value, Option) else value
                for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})


class NonFiniteLossError(RuntimeError):
    """The loss, a weight, an EMA weight or an optimizer state became NaN or infinite;
    training stopped without saving the bad state (the losses are checked when read, the
    state before each checkpoint is written)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: entries missing, weights that do not fit its model,
    or NaN / infinite values."""


def make_schedule(config: TrainConfig) -> NoiseSchedule:
    return NoiseSchedule(num_train_timesteps=config.num_train_timesteps,
                         beta_schedule=config.beta_schedule)


class Trainer:
    """Owns the model, optimizer, EMA, data order and generators of one training run."""

    def __init__(self, config: TrainConfig, images: np.ndarray | None = None,
                 labels: np.ndarray | None = None, model: UNet | None = None,
                 workers: int | None = None, device: str | Device | None = None) -> None:
        """`workers`: CPU threads for the batch slices (default: autograd's thread count);
        `device`: where the model trains ("cpu" default, "cuda"; the model is moved there).
        On the CPU the slices run on worker threads; on a GPU one after another
        (`nn.parallel.Replicas`). For a given `config.batch_slices` the result does not
        depend on `workers`; `self.config` holds the slice count used."""
        self.device = CPU if device is None else Device(device)
        self.workers = workers or autograd.get_num_threads()
        if config.batch_slices is None:
            slices = 1 if self.device.type != "cpu" else min(self.workers, config.batch_size)
            config = replace(config, batch_slices=slices)
        self.config = config
        if images is None:
            images, labels = load_mnist("train", data_dir=config.data_dir)
        autograd.manual_seed(config.seed)  # model init (and dropout) draw from it
        num_classes = 10 if config.class_conditional else None
        if model is None:
            channels = images.shape[1]
            out_channels = 2 * channels if config.variance_type.learned else channels
            model = build_model(config.model, num_classes=num_classes, in_channels=channels,
                                out_channels=out_channels)
        self.model = model.to(self.device)
        if self.model.config.image_size != images.shape[-1]:
            raise ValueError(f"model {config.model!r} expects {self.model.config.image_size}px "
                             f"images, the data has {images.shape[-1]}px")
        self.schedule = make_schedule(config)
        self.parameters = list(self.model.parameters())
        self.replicas = (Replicas(self.model, config.batch_slices) if config.batch_slices > 1
                         else None)
        self.optimizer = optim.AdamW(self.parameters, lr=config.lr,
                                     weight_decay=config.weight_decay)
        if config.lr_schedule is LrSchedule.COSINE:
            self.lr_scheduler = lr_scheduler.get_cosine_schedule_with_warmup(
                self.optimizer, config.warmup_steps, config.steps)
        else:
            self.lr_scheduler = lr_scheduler.get_constant_schedule_with_warmup(
                self.optimizer, config.warmup_steps)
        self.ema = optim.EMAModel(self.parameters, decay=config.ema_max_decay,
                                  use_ema_warmup=True, power=config.ema_power)
        self.batches = BatchIterator(images, labels if config.class_conditional else None,
                                     batch_size=config.batch_size, seed=config.seed,
                                     drop_last=True)
        self.generator = np.random.default_rng(config.seed + 1)  # t, noise, label dropout
        self.timestep_sampler = (LossSecondMomentResampler(config.num_train_timesteps)
                                 if config.timestep_sampler is TimestepSampler.LOSS_SECOND_MOMENT
                                 else None)
        self.step = 0
        self.saved_step: int | None = None  # the step the checkpoint on disk holds
        self.history: dict[str, list[float]] = {"step": [], "loss": [], "lr": []}
        # wall time spent in `train` so far, resumes included (None: resumed from a
        # checkpoint that predates the record)
        self.train_seconds: float | None = 0.0
        # the run's `tinydiff.time_budget.BudgetEstimate.to_dict()` when a time budget chose
        # its step count (set it before `train`); kept by resumed runs
        self.time_budget: dict[str, Any] | None = None
        self._unread: list[tuple[int, autograd.Tensor, float]] = []  # (step, loss, lr)

    # ---- one step -----------------------------------------------------------------------

    def train_step(self) -> autograd.Tensor:
        """One optimizer step on one batch; returns the loss, a 0-d float64 tensor on the
        training device (reading it, e.g. `float(loss)`, waits for the device). The loss
        enters `history` and is checked for NaN when `read_losses` runs."""
        config = self.config
        x0, labels = next(self.batches)
        x0 = to_device(x0, self.device)
        cond = {}
        if config.class_conditional:
            dropped = self.generator.random(labels.shape) < config.label_dropout
            cond["class_labels"] = np.where(dropped, 10, labels)
        self.model.train()
        options = dict(prediction_type=config.prediction_type,
                       loss_weighting=config.loss_weighting, snr_gamma=config.snr_gamma,
                       variance_type=config.variance_type, vlb_weight=config.vlb_weight)
        # the batch's draws, whatever its slices: t (and its weights), then the noise
        if self.timestep_sampler is not None:
            t, weights = self.timestep_sampler.sample(len(x0), self.generator)
        else:
            t = self.generator.integers(0, config.num_train_timesteps, size=len(x0),
                                        dtype=np.int64)
            weights = None
        noise = self.generator.standard_normal(x0.shape, dtype=x0.dtype)
        pieces = parts(len(x0), config.batch_slices)
        sample_losses: list[Any] = [None] * len(pieces)

        def slice_loss(i: int):
            part = slice(pieces[i].start, pieces[i].stop)

            def loss(model):
                terms = training_losses(
                    model, self.schedule, x0[part], self.generator, **options,
                    timesteps=t[part], noise=noise[part],
                    timestep_weights=None if weights is None else weights[part],
                    **{k: v[part] for k, v in cond.items()})
                sample_losses[i] = terms.per_sample
                return terms.loss * (len(pieces[i]) / len(x0))  # its share of the mean

            return loss

        if self.replicas is None:
            loss = slice_loss(0)(self.model)
            self.optimizer.zero_grad()
            loss.backward()
            slice_losses = [loss.detach()]
        else:  # on worker threads on the CPU, one after another on a GPU: the same result
            slice_losses = self.replicas.backward([slice_loss(i) for i in range(len(pieces))],
                                                  self.workers)
        loss = sum(part.double() for part in slice_losses)
        if self.timestep_sampler is not None:  # reads the per-sample losses on the host
            self.timestep_sampler.update(t, np.concatenate([to_device(s, CPU)
                                                            for s in sample_losses]))
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters, config.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.lr_scheduler.step()
        self.ema.step(self.parameters)
        self.step += 1
        self._unread.append((self.step, loss, lr))
        return loss

    def read_losses(self) -> None:
        """Move the losses of the steps since the last read to the host (one transfer),
        check them and append them to `history`; NonFiniteLossError at the first NaN/inf."""
        if not self._unread:
            return
        steps, losses, lrs = zip(*self._unread)
        self._unread = []
        values = autograd.stack(list(losses)).cpu().numpy().tolist()
        for step, value, lr in zip(steps, values, lrs):
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"the loss became {value} at step {step}; training stopped and "
                    f"{self.kept_checkpoint()}. Try a lower --lr or a smaller --grad-clip; to "
                    "find the op, rerun with --detect-anomaly (autograd.detect_anomaly()).")
            for key, item in (("step", step), ("loss", value), ("lr", lr)):
                self.history[key].append(item)

    def kept_checkpoint(self) -> str:
        """What is on disk after a failure: "the last checkpoint (step N) was kept"."""
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"the last checkpoint (step {self.saved_step}) was kept"

    # ---- the loop -----------------------------------------------------------------------

    def train(self, out_dir: str | Path, steps: int | None = None,
              progress: bool = True) -> Path:
        """Train until `steps` (default config.steps) total steps, checkpointing to
        out_dir/ckpt.npz every `checkpoint_every` steps and at the end. SIGINT or SIGTERM
        ends the current step, saves and raises TrainingInterrupted. Adds its wall time to
        `train_seconds` (a checkpoint holds the time up to its save)."""
        from tqdm.auto import tqdm

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)  # left by a save that was killed
        total = self.config.steps if steps is None else steps
        bar = tqdm(total=total, initial=self.step, disable=not progress, unit="step",
                   dynamic_ncols=True)
        smoothed, started, start_step = None, time.perf_counter(), self.step
        spent_before = self.train_seconds

        def clock_in() -> None:
            if spent_before is not None:
                self.train_seconds = spent_before + time.perf_counter() - started

        try:
            with StopRequests() as stop:
                while self.step < total:
                    self.train_step()
                    bar.update(1)
                    if self.step % LOSS_READ_EVERY == 0 or self.step == total:
                        read = len(self.history["loss"])
                        self.read_losses()
                        for loss in self.history["loss"][read:]:
                            smoothed = loss if smoothed is None else \
                                0.98 * smoothed + 0.02 * loss
                        rate = (self.step - start_step) * self.config.batch_size / max(
                            time.perf_counter() - started, 1e-9)
                        bar.set_postfix(loss=f"{smoothed:.4f}", img_s=f"{rate:.0f}")
                    if self.step % self.config.checkpoint_every == 0 or self.step == total \
                            or stop.signal_name is not None:
                        clock_in()
                        self.save(out_dir)
                    if stop.signal_name is not None:
                        raise TrainingInterrupted(
                            stop.signal_name, self.saved_step,
                            f"stopped by {stop.signal_name} at step {self.step}; saved "
                            f"{out_dir / 'ckpt.npz'} (step {self.saved_step}): continue it "
                            "with --resume")
        finally:
            clock_in()
            bar.close()
        return out_dir / "ckpt.npz"

    def save(self, out_dir: Path) -> None:
        """Write ckpt.npz (and ckpt-STEP.npz if asked), the loss CSV and its plot, after
        reading and checking the losses not yet read and checking that every weight, EMA
        weight and optimizer state is finite (NonFiniteLossError, nothing written, if not)."""
        state = self.state_dict()
        for key in WEIGHT_ENTRIES:
            if (name := first_non_finite(state[key], key)) is not None:
                raise NonFiniteLossError(
                    f"{name} became NaN or infinite by step {self.step}; training stopped and "
                    f"{self.kept_checkpoint()}. Try a lower --lr or a smaller --grad-clip.")
        autograd.save(state, out_dir / "ckpt.npz")
        if self.config.keep_checkpoints:
            autograd.save(state, out_dir / f"ckpt-{self.step:07d}.npz")
        self.saved_step = self.step
        write_history_csv(self.history, out_dir / "loss.csv")
        from tinydiff.plots import plot_loss_curve

        plot_loss_curve(self.history, out_dir / "loss.png")

    # ---- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        self.read_losses()
        return {
            "format": CHECKPOINT_FORMAT,
            "train_config": self.config.to_dict(),
            "model_config": self.model.config.to_dict(),
            "schedule": self.schedule.to_dict(),
            "prediction_type": self.config.prediction_type.value,
            "model": dict(self.model.state_dict()),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "data": self.batches.state_dict(),
            "generator": self.generator.bit_generator.state,
            "default_generator": default_generator().bit_generator.state,
            "step": self.step,
            "history": self.history,
            **({"timestep_sampler": self.timestep_sampler.state_dict()}
               if self.timestep_sampler is not None else {}),
            **({"train_seconds": self.train_seconds} if self.train_seconds is not None
               else {}),
            **({"time_budget": dict(self.time_budget)} if self.time_budget is not None
               else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.batches.load_state_dict(state["data"])
        self.generator.bit_generator.state = state["generator"]
        default_generator().bit_generator.state = state["default_generator"]
        if self.timestep_sampler is not None:
            self.timestep_sampler.load_state_dict(state["timestep_sampler"])
        self.step = int(state["step"])
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.train_seconds = state.get("train_seconds")  # not in older checkpoints
        self.time_budget = state.get("time_budget")

    @classmethod
    def resume(cls, path: str | Path, images: np.ndarray | None = None,
               labels: np.ndarray | None = None, device: str | Device | None = None,
               **overrides: Any) -> Trainer:
        """Continue the run saved at `path` on `device` (any device, whichever trained it);
        `overrides` may change e.g. `steps`. CheckpointError if its weights are not finite
        or do not fit its model."""
        state = read_checkpoint(path)
        require_finite(state, path, WEIGHT_ENTRIES)
        config = TrainConfig.from_dict({**state["train_config"], **overrides})
        model = build_model(state["model_config"])
        trainer = cls(config, images, labels, model=model, device=device)
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path} does not fit its own model: "
                                  f"{one_line(error)}") from None
        trainer.saved_step = trainer.step
        return trainer


# ---- checkpoints --------------------------------------------------------------------------

def one_line(error: BaseException) -> str:
    """The error's message with its lines joined (command-line errors are one line)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


REQUIRED_ENTRIES = ("train_config", "model_config", "schedule", "prediction_type", "model")


def read_tagged_file(path: str | Path, format_tag: str, description: str,
                     hint: str) -> dict[str, Any]:
    """The dict saved at `path` by autograd.save, after checking its "format" entry.
    Missing: FileNotFoundError "no {description} at {path}: {hint}"; wrong: ValueError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {description} at {path}: {hint}")
    state = autograd.load(path)
    if not isinstance(state, dict) or state.get("format") != format_tag:
        raise ValueError(f"{path} is not a {description} (format {format_tag!r} expected)")
    return state


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, after checking that it is one and has the entries every
    use needs (CheckpointError naming the missing ones)."""
    state = read_tagged_file(path, CHECKPOINT_FORMAT, "tinydiff checkpoint",
                             "train one with `tinydiff train --out DIR` (it writes DIR/ckpt.npz)")
    missing = [key for key in REQUIRED_ENTRIES if key not in state]
    if missing:
        raise CheckpointError(f"{path} is damaged: it has no {', '.join(missing)} entry")
    return state


def require_finite(state: dict[str, Any], path: str | Path, entries: tuple[str, ...]) -> None:
    """CheckpointError naming the first array of the checkpoint's `entries` that holds a
    NaN or an infinity."""
    for key in entries:
        if key in state and (name := first_non_finite(state[key], key)) is not None:
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values; refusing to "
                                  "use it (take an earlier checkpoint, e.g. --keep-checkpoints)")


def checkpoint_variance_type(state: dict[str, Any]) -> str:
    """The variance type a checkpoint's model was trained for (fixed_small before it existed)."""
    return state["train_config"].get("variance_type", "fixed_small")


def load_for_sampling(path: str | Path, use_ema: bool = True,
                      device: str | Device | None = None):
    """(model in eval mode holding EMA weights, on `device` (default the CPU), schedule,
    prediction_type, checkpoint); `checkpoint_variance_type(checkpoint)` says what its model
    outputs."""
    state = read_checkpoint(path)
    if use_ema and "ema" not in state:
        raise CheckpointError(f"{path} holds no EMA weights; try --no-ema (the raw weights)")
    require_finite(state, path, ("model", "ema") if use_ema else ("model",))
    model = build_model(state["model_config"]).to(CPU if device is None else Device(device))
    try:
        model.load_state_dict(state["model"])
        if use_ema:
            ema = optim.EMAModel(model.parameters())
            ema.load_state_dict(state["ema"])
            ema.copy_to(model.parameters())
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: its weights do not fit its model: "
                              f"{one_line(error)}") from None
    model.eval()
    schedule = NoiseSchedule.from_dict(state["schedule"])
    return model, schedule, state["prediction_type"], state


def write_history_csv(history: dict[str, list[float]], path: Path) -> None:
    with atomic_write(path, "w") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "loss", "lr"])
        writer.writerows(zip(history["step"], history["loss"], history["lr"]))
