"""Classifier guidance (Dhariwal & Nichol 2021): a noise-aware classifier p(y | x_t, t), its
training on q_sample'd images, checkpoints, and grad_x log p(y | x_t, t) for the samplers.

The classifier is improved-diffusion's EncoderUNet, small: the UNet's down path (the same
`ResBlock`, `Downsample` and sinusoidal timestep embedding as tinydiff.models), then
GroupNorm -> SiLU -> global average pool -> Linear. The samplers take the gradient through
`sample(..., classifier_grad_fn=classifier_grad_fn(classifier, labels), classifier_scale=s)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import autograd
from autograd import nn, optim
from autograd.backend import device_of, get_array_module, to_device
from autograd.nn import functional as F
from autograd.tensor import Tensor, as_array
from tinydiff.data import BatchIterator
from tinydiff.diffusion import q_sample
from tinydiff.eval import random_shift
from tinydiff.models import Downsample, ResBlock, norm_silu, timestep_embedding
from tinydiff.schedules import NoiseSchedule
from tinydiff.training import read_tagged_file

CLASSIFIER_FORMAT = "tinydiff-noise-aware-classifier-v1"


@dataclass(frozen=True)
class NoiseAwareClassifierConfig:
    """Settings of the classifier: one level per `channel_mult` entry (num_res_blocks
    ResBlocks each), a stride-2 Downsample between levels (28 -> 14 -> 7 for three levels)."""

    in_channels: int = 1
    num_classes: int = 10
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    time_embed_dim: int = 32  # sinusoidal features; the MLP maps them to 4 * base_channels
    norm_groups: int = 8
    image_size: int = 28

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> NoiseAwareClassifierConfig:
        config = dict(config)
        config["channel_mult"] = tuple(config["channel_mult"])
        return cls(**config)


class NoiseAwareClassifier(nn.Module):
    """classifier(x, t) -> logits: x (N, in_channels, H, W) float, t (N,) integer
    timesteps -> (N, num_classes). No dropout or batch statistics: each sample's logits
    depend on that sample alone."""

    def __init__(self, config: NoiseAwareClassifierConfig | None = None) -> None:
        super().__init__()
        config = config or NoiseAwareClassifierConfig()
        self.config = config
        embed_dim = 4 * config.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(config.time_embed_dim, embed_dim), nn.SiLU(),
                                      nn.Linear(embed_dim, embed_dim))
        self.conv_in = nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)
        self.levels, self.downsamples = nn.ModuleList(), nn.ModuleList()
        current = config.base_channels
        for level, mult in enumerate(config.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(current, config.base_channels * mult, embed_dim,
                                       config.norm_groups, dropout=0.0))
                current = config.base_channels * mult
            self.levels.append(blocks)
            if level < len(config.channel_mult) - 1:
                self.downsamples.append(Downsample(current))
        self.norm_out = nn.GroupNorm(config.norm_groups, current)
        self.head = nn.Linear(current, config.num_classes)

    def forward(self, x: Tensor | np.ndarray, t: Tensor | np.ndarray) -> Tensor:
        """x (N, C, H, W): a Tensor on the classifier's device or an array (moved there);
        t (N,): host integers."""
        x = x if isinstance(x, Tensor) else Tensor(x, device=self.conv_in.weight.device)
        t = np.asarray(t.numpy() if isinstance(t, Tensor) else t)
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"NoiseAwareClassifier expects x of shape "
                             f"(N, {self.config.in_channels}, H, W), got {x.shape}")
        if t.shape != (x.shape[0],) or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"NoiseAwareClassifier expects integer t of shape "
                             f"({x.shape[0]},), got {t.dtype} {t.shape}")
        features = timestep_embedding(t, self.config.time_embed_dim,
                                      dtype=self.conv_in.weight.dtype)
        embedding = self.time_mlp(Tensor(features, device=x.device))
        h = self.conv_in(x)
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, embedding)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = norm_silu(self.norm_out, h)
        return self.head(h.mean(dim=(2, 3)))


# ---- training -----------------------------------------------------------------------------


def train_noise_aware_classifier(
    images: np.ndarray, labels: np.ndarray, schedule: NoiseSchedule, steps: int = 1500,
    batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True,
    config: NoiseAwareClassifierConfig | None = None, weight_decay: float = 0.05,
) -> NoiseAwareClassifier:
    """Train on x_t = q_sample(x0, t, noise), t ~ U{0..T-1}, with cross-entropy, AdamW and a
    cosine learning rate after a short warm-up. images (N, 1, H, W) in [-1, 1], labels (N,).
    The data order, +-2 pixel shifts, t and noise all come from default_rng(seed); the
    initial weights from autograd.manual_seed(seed). Returns the model in eval mode."""
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"need images (N, C, H, W) and labels (N,), got {images.shape} and "
                         f"{labels.shape}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    autograd.manual_seed(seed)
    model = NoiseAwareClassifier(config)
    generator = np.random.default_rng(seed)
    batches = BatchIterator(images, labels, batch_size=batch_size, seed=generator,
                            drop_last=True)
    optimizer = optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    lr_schedule = optim.lr_scheduler.get_cosine_schedule_with_warmup(
        optimizer, min(100, steps // 10), max(steps, 1))
    model.train()
    for _ in tqdm(range(steps), disable=not progress, desc="noise-aware classifier",
                  unit="step"):
        x0, y = next(batches)
        x0 = random_shift(x0, generator)
        t = generator.integers(0, schedule.num_train_timesteps, size=len(x0))
        x_t = q_sample(schedule, x0, t, generator.standard_normal(x0.shape, dtype=x0.dtype))
        loss = F.cross_entropy(model(Tensor(x_t), t), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_schedule.step()
    return model.eval()


def noised_accuracy(classifier: NoiseAwareClassifier, schedule: NoiseSchedule,
                    images: np.ndarray, labels: np.ndarray, t: int, seed: int = 0,
                    batch_size: int = 500) -> float:
    """Fraction of q_sample(images, t) classified as `labels`, noise from default_rng(seed)."""
    generator = np.random.default_rng(seed)
    correct = 0
    with autograd.no_grad():
        for start in range(0, len(images), batch_size):
            x0 = images[start:start + batch_size]
            steps = np.full(len(x0), t, dtype=np.int64)
            x_t = q_sample(schedule, x0, steps,
                           generator.standard_normal(x0.shape, dtype=x0.dtype))
            logits = classifier(Tensor(x_t), steps).numpy()
            correct += int(np.sum(logits.argmax(axis=1) == labels[start:start + batch_size]))
    return correct / len(images)


# ---- checkpoints --------------------------------------------------------------------------


def save_classifier(model: NoiseAwareClassifier, path: str | Path,
                    schedule: NoiseSchedule | None = None) -> Path:
    """Write config and weights (and the noise schedule it was trained with, when given)
    atomically to `path`."""
    path = Path(path)
    autograd.save({"format": CLASSIFIER_FORMAT, "config": model.config.to_dict(),
                   "model": dict(model.state_dict()),
                   "schedule": None if schedule is None else schedule.to_dict()}, path)
    return path


def load_noise_aware_classifier(path: str | Path,
                                schedule: NoiseSchedule | None = None) -> NoiseAwareClassifier:
    """The classifier saved at `path`, in eval mode. With `schedule`, also check that it is
    the one the classifier was trained with (t must mean the same noise level)."""
    state = read_tagged_file(path, CLASSIFIER_FORMAT, "noise-aware classifier",
                             "train one with train_noise_aware_classifier and save_classifier")
    if schedule is not None and state["schedule"] is not None:
        trained = NoiseSchedule.from_dict(state["schedule"])
        if not np.array_equal(trained.alphas_cumprod, schedule.alphas_cumprod):
            raise ValueError(f"{path} was trained with the noise schedule {trained!r}, "
                             f"not the sampler's {schedule!r}")
    model = NoiseAwareClassifier(NoiseAwareClassifierConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.eval()


# ---- the guidance gradient ----------------------------------------------------------------


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside (no weight gradients computed or stored)."""
    parameters = list(module.parameters())
    flags = [p.requires_grad for p in parameters]
    try:
        for p in parameters:
            p.requires_grad = False
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad = flag


def _check_labels(labels: Any, batch: int | None, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (batch is not None and labels.shape[0] != batch):
        expected = "(N,)" if batch is None else f"({batch},)"
        raise ValueError(f"labels must have shape {expected}, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    high = np.inf if num_classes is None else num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= high):
        raise ValueError(f"labels must lie in [0, {num_classes}) (the classifier's classes), "
                         f"got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _num_classes(classifier: nn.Module) -> int | None:
    config = getattr(classifier, "config", None)
    return getattr(config, "num_classes", None)


def classifier_log_prob_gradient(classifier: nn.Module, x_t: np.ndarray, t: np.ndarray,
                                 labels: np.ndarray) -> np.ndarray:
    """grad_x of sum_i log softmax(classifier(x_t, t))[i, labels[i]]: x_t (N, C, H, W), t (N,)
    int, labels (N,) int -> (N, C, H, W) in x_t's dtype. Row i is the gradient of sample i's
    own log-probability when the classifier treats samples independently (this module's
    does). `classifier(x, t)` is any module returning logits (N, K); it runs in its
    parameters' dtype and on their device (the gradient comes back on x_t's). Records the
    graph even under no_grad; parameters get no gradients."""
    x_t = as_array(x_t)
    if x_t.ndim < 2 or not np.issubdtype(x_t.dtype, np.floating):
        raise ValueError(f"x_t must be a float batch (N, C, H, W), got {x_t.dtype} "
                         f"{x_t.shape}")
    t = np.asarray(t)
    if t.shape != x_t.shape[:1] or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"t must be integers of shape ({x_t.shape[0]},), got {t.dtype} "
                         f"{t.shape}")
    labels = _check_labels(labels, x_t.shape[0], _num_classes(classifier))
    first = next(iter(classifier.parameters()), None)
    dtype, device = (x_t.dtype, device_of(x_t)) if first is None else (first.dtype,
                                                                       first.device)
    with autograd.enable_grad(), _frozen(classifier):
        x = Tensor(x_t.astype(dtype), requires_grad=True, device=device)
        logits = classifier(x, t)
        if logits.ndim != 2 or logits.shape[0] != x_t.shape[0]:
            raise ValueError(f"the classifier returned shape {logits.shape}, expected logits "
                             f"({x_t.shape[0]}, num_classes)")
        _check_labels(labels, None, logits.shape[1])
        log_probs = F.log_softmax(logits, dim=1)
        autograd.gather(log_probs, 1, labels[:, None]).sum().backward()
    if x.grad is None:  # the logits do not depend on x
        return get_array_module(x_t).zeros_like(x_t)
    return to_device(x.grad.data, device_of(x_t)).astype(x_t.dtype, copy=False)


def classifier_grad_fn(classifier: nn.Module,
                       labels: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fn(x_t (N, C, H, W), t (N,) int64) -> grad_x log p(labels | x_t, t) (N, C, H, W), for
    `sample(..., classifier_grad_fn=fn, classifier_scale=s)`; the labels (N,) are fixed here."""
    labels = _check_labels(labels, None, _num_classes(classifier))

    def fn(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        return classifier_log_prob_gradient(classifier, x_t, t, labels)

    return fn


__all__ = ["NoiseAwareClassifierConfig", "NoiseAwareClassifier", "train_noise_aware_classifier",
           "noised_accuracy", "save_classifier", "load_noise_aware_classifier",
           "classifier_log_prob_gradient", "classifier_grad_fn", "CLASSIFIER_FORMAT"]
