"""Evaluating samples: an MNIST classifier built with this library, MNIST-FID on its
penultimate features, classifier confidence and class histogram, and NLL in bits/dim.

FID depends on the number of samples: every score is reported with its count, beside the
reference distance between that many training images and the test set.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import autograd
from autograd import nn, optim
from autograd.nn import functional as F
from tinydiff.data import BatchIterator, cache_dir, load_mnist

CLASSIFIER_FILE = "mnist-classifier-v1.npz"


class Classifier(nn.Module):
    """conv3x3(32) -> ReLU -> maxpool -> conv3x3(64) -> ReLU -> maxpool -> Linear(128) ->
    ReLU (the features) -> dropout -> Linear(10). Input (N, 1, 28, 28) in [-1, 1]."""

    feature_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, self.feature_dim)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x) -> autograd.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x) -> autograd.Tensor:
        return self.head(self.dropout(self.features(x)))


def train_classifier(images: np.ndarray, labels: np.ndarray, epochs: int = 3,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     progress: bool = True) -> Classifier:
    """Train the classifier with AdamW and a cosine schedule; random +-2 pixel shifts."""
    from tqdm.auto import tqdm

    autograd.manual_seed(seed)
    model = Classifier()
    batches = BatchIterator(images, labels, batch_size=batch_size, seed=seed, drop_last=True)
    steps = epochs * batches.steps_per_epoch
    optimizer = optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = optim.lr_scheduler.get_cosine_schedule_with_warmup(optimizer, 100, steps)
    generator = np.random.default_rng(seed)
    model.train()
    for _ in tqdm(range(steps), disable=not progress, desc="classifier", unit="step"):
        x, y = next(batches)
        loss = F.cross_entropy(model(autograd.Tensor(random_shift(x, generator))), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def random_shift(images: np.ndarray, generator: np.random.Generator, pixels: int = 2):
    """Translate each image by up to `pixels` in x and y, filling with the background."""
    padded = np.pad(images, ((0, 0), (0, 0), (pixels, pixels), (pixels, pixels)),
                    constant_values=-1.0)
    size = images.shape[-1]
    out = np.empty_like(images)
    offsets = generator.integers(0, 2 * pixels + 1, size=(len(images), 2))
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, dy:dy + size, dx:dx + size]
    return out


def predict(model: Classifier, images: np.ndarray, batch_size: int = 500):
    """(features (N, 128), class probabilities (N, 10)) in float64."""
    features, probabilities = [], []
    model.eval()
    with autograd.no_grad():
        for start in range(0, len(images), batch_size):
            x = autograd.Tensor(np.ascontiguousarray(images[start:start + batch_size],
                                                     dtype=np.float32))
            h = model.features(x)
            features.append(h.numpy().astype(np.float64))
            probabilities.append(model.head(h).softmax(dim=1).numpy().astype(np.float64))
    return np.concatenate(features), np.concatenate(probabilities)


def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predict(model, images)[1].argmax(axis=1) == labels))


_LOADED_CLASSIFIERS: dict[tuple[str, int], Classifier] = {}


def load_classifier(path: Path | None = None, train_if_missing: bool = True,
                    progress: bool = True) -> Classifier:
    """The cached classifier from $TINYDIFF_HOME, trained (about 3 epochs) if absent. A file
    already loaded (and unchanged since) gives the same object back, so its test-set
    statistics are computed once per process."""
    path = path or cache_dir() / CLASSIFIER_FILE
    if path.exists():
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        if key not in _LOADED_CLASSIFIERS:
            model = Classifier()
            model.load_state_dict(autograd.load(path))
            _LOADED_CLASSIFIERS[key] = model.eval()
        return _LOADED_CLASSIFIERS[key]
    if not train_if_missing:
        raise FileNotFoundError(f"no classifier at {path}")
    images, labels = load_mnist("train")
    model = train_classifier(images, labels, progress=progress)
    test_images, test_labels = load_mnist("test")
    print(f"classifier test accuracy: {accuracy(model, test_images, test_labels):.4f}")
    autograd.save(dict(model.state_dict()), path)
    return model


# ---- Frechet distance ---------------------------------------------------------------------


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """|m1 - m2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)). tr((C1 C2)^(1/2)) equals the trace of
    the symmetric (C1^(1/2) C2 C1^(1/2))^(1/2), so only symmetric eigendecompositions are
    needed (no SciPy)."""
    root1 = _sqrt_psd(cov1)
    middle = root1 @ cov2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sum(np.sqrt(np.clip(eigenvalues, 0, None)))
    diff = mean1 - mean2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


@dataclass
class SampleReport:
    count: int
    fid: float
    reference_fid: float
    mean_confidence: float
    class_histogram: np.ndarray
    classes_present: int
    label_accuracy: float | None = None  # class-conditional samples: classifier == label

    def lines(self) -> list[str]:
        histogram = " ".join(f"{d}:{c}" for d, c in enumerate(self.class_histogram))
        lines = [
            f"MNIST-FID ({self.count} samples vs test set): {self.fid:.2f}",
            f"reference: {self.count} train images vs test set: {self.reference_fid:.2f}",
            f"mean classifier confidence: {self.mean_confidence:.3f}",
            f"classes present: {self.classes_present}/10  ({histogram})",
        ]
        if self.label_accuracy is not None:
            lines.append(f"classified as the requested digit: {self.label_accuracy:.3f}")
        return lines


_TEST_STATISTICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def test_set_statistics(classifier: Classifier) -> tuple[np.ndarray, np.ndarray]:
    """Mean (128,) and covariance (128, 128) of the test set's features, computed once per
    classifier object (the classifier is not trained further once it scores samples)."""
    if classifier not in _TEST_STATISTICS:
        test_images, _ = load_mnist("test")
        _TEST_STATISTICS[classifier] = feature_statistics(predict(classifier, test_images)[0])
    return _TEST_STATISTICS[classifier]


def evaluate_samples(samples: np.ndarray, classifier: Classifier | None = None,
                     seed: int = 0, labels: np.ndarray | None = None) -> SampleReport:
    """FID against the MNIST test set, confidence and class histogram of `samples`
    (N, 1, 28, 28) in [-1, 1]; the reference FID uses N random training images. With the
    `labels` (N,) the samples were conditioned on, also the fraction classified as them."""
    classifier = classifier or load_classifier()
    train_images, _ = load_mnist("train")
    count = len(samples)
    reference = train_images[np.random.default_rng(seed).choice(len(train_images), count,
                                                                replace=False)]
    test_stats = test_set_statistics(classifier)
    sample_features, probabilities = predict(classifier, np.clip(samples, -1, 1))
    histogram = np.bincount(probabilities.argmax(axis=1), minlength=10)
    return SampleReport(
        count=count,
        fid=frechet_distance(*feature_statistics(sample_features), *test_stats),
        reference_fid=frechet_distance(*feature_statistics(predict(classifier, reference)[0]),
                                       *test_stats),
        mean_confidence=float(probabilities.max(axis=1).mean()),
        class_histogram=histogram,
        classes_present=int(np.count_nonzero(histogram)),
        label_accuracy=(None if labels is None
                        else float(np.mean(probabilities.argmax(axis=1) == labels))),
    )


def nll_bits_per_dim(model, schedule, images: np.ndarray, prediction_type: str,
                     batch_size: int = 64, seed: int = 0,
                     variance_type: str = "fixed_small",
                     device: str | None = None, progress: bool = False) -> tuple[float, float]:
    """Mean and standard error of the variational bound in bits/dim over `images` (a subset
    of the test set: every image costs T model evaluations); `variance_type` is the model's
    (learned_range: from its variance channels). The bound is computed on `device`
    (default: the model's). `progress`: a tqdm bar over the images."""
    from tqdm.auto import tqdm

    from autograd.backend import to_device
    from tinydiff.diffusion import variational_bound
    from tinydiff.samplers import model_device

    device = model_device(model) if device is None else device
    generator = np.random.default_rng(seed)
    totals = []
    bar = tqdm(total=len(images), disable=not progress, unit="image", desc="NLL bound",
               dynamic_ncols=True)
    with autograd.no_grad(), bar:
        for start in range(0, len(images), batch_size):
            batch = to_device(images[start:start + batch_size], device)
            bound = variational_bound(model, schedule, batch,
                                      generator, prediction_type=prediction_type,
                                      variance_type=variance_type)
            totals.append(bound.total)
            bar.update(len(batch))
    totals = np.concatenate(totals)
    return float(totals.mean()), float(totals.std(ddof=1) / np.sqrt(len(totals))
                                       if len(totals) > 1 else 0.0)
