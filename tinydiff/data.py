"""MNIST: find, verify and parse the IDX files, scale them, and iterate over them in batches.

Each file is looked for in one place, in this order:

1. ``data_dir`` when the caller gives one (the CLI's ``--data-dir``); it is then the only place.
2. The copy shipped inside the package (``tinydiff/assets/mnist``).
3. The download cache, ``cache_dir() / "mnist"``.
4. The public mirrors, downloaded into the cache (when ``download=True``).

Every file is checked against the published SHA-256 of its decompressed bytes before use. Any
problem raises `MNISTError`, whose message names the file, says what is wrong and what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import logging
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

Split = Literal["train", "test"]

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_SIZE = 28
NUM_CLASSES = 10

FILE_NAMES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

EXPECTED_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""SHA-256 of each file once decompressed (the published checksums of the original files)."""

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
"""Base URLs serving ``<name>.gz``, tried in order."""

DOWNLOAD_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 64 * 2**20  # the largest file, train images, is 9.6 MB compressed

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08


class MNISTError(RuntimeError):
    """An MNIST file is missing, truncated or corrupt, or could not be downloaded."""


def cache_dir() -> Path:
    """The directory for downloads and other cached artifacts: ``$TINYDIFF_HOME`` or
    ``~/.cache/tinydiff``. Not created here."""
    home = os.environ.get("TINYDIFF_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "tinydiff"


def shipped_data_dir() -> Path | None:
    """The MNIST files shipped inside the package, or None where the package is not on a
    plain file system (e.g. imported from a zip)."""
    directory = importlib.resources.files("tinydiff") / "assets" / "mnist"
    return directory if isinstance(directory, Path) and directory.is_dir() else None


# --- IDX parsing --------------------------------------------------------------------------------


def read_idx(
    path: str | os.PathLike[str],
    *,
    expected_magic: int | None = None,
    expected_sha256: str | None = None,
    hint: str = "Delete or replace it.",
) -> np.ndarray:
    """Read an unsigned-byte IDX file, gzip-compressed or not, as a read-only uint8 array of the
    shape its header gives (e.g. (N, 28, 28) for images, (N,) for labels).

    Checks, in order: readable, valid gzip, header present, magic, payload length, SHA-256 of the
    decompressed bytes. Each failure raises `MNISTError` naming the file, followed by ``hint``.
    """
    path = Path(path)

    def fail(problem: str) -> MNISTError:
        return MNISTError(f"MNIST file {path}: {problem}. {hint}")

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail("missing") from None
    except OSError as err:
        raise fail(f"cannot be read ({err.strerror or err})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise fail(f"not a valid gzip file, truncated or corrupt ({err})") from None

    if len(raw) < 4:
        raise fail(f"truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic")
    (magic,) = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != _IDX_UBYTE or ndim == 0:
        raise fail(f"bad magic number {magic}: not an unsigned-byte IDX file")
    if expected_magic is not None and magic != expected_magic:
        raise fail(f"bad magic number {magic}, expected {expected_magic}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise fail(f"truncated: {len(raw)} bytes, shorter than its {header_size}-byte header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(raw) < expected_size:
        raise fail(f"truncated: {len(raw)} bytes, its header {shape} needs {expected_size}")
    if len(raw) > expected_size:
        raise fail(f"{len(raw) - expected_size} trailing bytes after the data its header announces")

    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise fail(f"checksum mismatch: expected SHA-256 {expected_sha256}, got {actual}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


@lru_cache(maxsize=8)
def _read_idx_cached(
    path: str, size: int, mtime_ns: int, expected_magic: int, expected_sha256: str, hint: str
) -> np.ndarray:
    """`read_idx`, once per process per file version (size and mtime are part of the key)."""
    return read_idx(path, expected_magic=expected_magic, expected_sha256=expected_sha256, hint=hint)


# --- Finding and downloading files --------------------------------------------------------------


def _find_in(directory: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` inside ``directory``, whichever exists (uncompressed first)."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(name: str, mirrors: Sequence[str], timeout: float) -> Path:
    """Fetch ``name.gz`` from the first mirror that serves a valid copy into the cache."""
    target_dir = cache_dir() / "mnist"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{name}.gz"
    failures = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{name}.gz"
        log.info("downloading %s", url)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target_dir)
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_url(url, out, timeout)
            read_idx(tmp_path, expected_sha256=EXPECTED_SHA256[name], hint="")
            os.replace(tmp_path, target)
            return target
        except (OSError, HTTPException, ValueError, MNISTError) as err:
            failures.append(f"  {url}: {err}")
        finally:
            tmp_path.unlink(missing_ok=True)
    tried = "\n".join(failures) if failures else "  (no mirrors given)"
    raise MNISTError(
        f"MNIST file {name}: not found locally and every download failed:\n{tried}\n"
        "Check the network, or download the files yourself and pass --data-dir."
    )


def _copy_url(url: str, out: Any, timeout: float) -> None:
    """Stream ``url`` into the binary file ``out``, refusing more than MAX_DOWNLOAD_BYTES."""
    request = urllib.request.Request(url, headers={"User-Agent": "tinydiff"})
    copied = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            copied += len(chunk)
            if copied > MAX_DOWNLOAD_BYTES:
                raise ValueError(f"larger than {MAX_DOWNLOAD_BYTES} bytes")
            out.write(chunk)


def _load_file(
    name: str,
    magic: int,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    mirrors: Sequence[str] | None,
) -> np.ndarray:
    """The verified contents of one MNIST file, from the first place that has it."""
    if data_dir is not None:
        directory = Path(data_dir)
        path = _find_in(directory, name) or directory / f"{name}.gz"
        hint = f"Put the original file (or its .gz) in --data-dir {directory}."
    elif (shipped := shipped_data_dir()) is not None and (path := _find_in(shipped, name)):
        hint = "The installed package is damaged: reinstall tinydiff, or pass --data-dir."
    elif path := _find_in(cache_dir() / "mnist", name):
        hint = "Delete it to download it again, or pass --data-dir."
    elif download:
        path = _download(name, MIRRORS if mirrors is None else mirrors, DOWNLOAD_TIMEOUT_S)
        hint = "Delete it to download it again, or pass --data-dir."
    else:
        raise MNISTError(
            f"MNIST file {name}: missing (not shipped, not in {cache_dir() / 'mnist'}) and "
            "downloading is off. Pass --data-dir, or allow the download."
        )
    try:
        stat = path.stat()
    except OSError:
        return read_idx(path, hint=hint)  # raises the "missing" / "cannot be read" error
    return _read_idx_cached(
        str(path.resolve()), stat.st_size, stat.st_mtime_ns, magic, EXPECTED_SHA256[name], hint
    )


# --- Loading ------------------------------------------------------------------------------------


def load_mnist_uint8(
    split: Split = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The raw split: images uint8 (N, 28, 28), read-only and shared within the process, and
    labels int64 (N,). N is 60000 for "train", 10000 for "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    images = _load_file(FILE_NAMES[split, "images"], IMAGE_MAGIC, data_dir, download, mirrors)
    labels = _load_file(FILE_NAMES[split, "labels"], LABEL_MAGIC, data_dir, download, mirrors)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or labels.shape != images.shape[:1]:
        raise MNISTError(
            f"MNIST {split} split: images {images.shape} and labels {labels.shape} do not match "
            f"(expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}) and (N,)). Replace the files."
        )
    return images, labels.astype(np.int64)


def load_mnist(
    split: Split = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The split ready for a model: images float32 (N, 1, 28, 28) in [-1, 1], labels int64 (N,).

    ``classes`` keeps only those digits; ``limit`` then keeps the first ``limit`` examples.
    """
    images, labels = load_mnist_uint8(split, data_dir=data_dir, download=download, mirrors=mirrors)
    if classes is not None:
        keep = np.isin(labels, np.asarray(classes))
        images, labels = images[keep], labels[keep]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return scale_images(images[:, None]), labels


def scale_images(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1] (x / 127.5 - 1), same shape."""
    images = pixels.astype(np.float32)
    images /= np.float32(127.5)
    images -= np.float32(1.0)
    return images


def unscale_images(images: np.ndarray) -> np.ndarray:
    """float images in [-1, 1] -> uint8 pixels, rounded and clipped; the inverse of
    `scale_images`."""
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


# --- Batches ------------------------------------------------------------------------------------


class BatchIterator:
    """Shuffled mini-batches ``(images[idx], labels[idx])`` over epochs, resumable exactly.

    Each epoch draws a permutation of the indices from ``seed`` (an int or a
    `numpy.random.Generator`, used for every random draw) and gathers one batch at a time, so the
    dataset itself is never copied. Batches are fresh arrays of shape (batch_size, ...), the last
    one smaller unless ``drop_last``. With ``flip_prob > 0`` each image is mirrored along its last
    axis (width) with that probability. ``num_epochs=None`` iterates forever. `state_dict` and
    `load_state_dict` save and restore the position so a resumed run sees the same batches.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        batch_size: int,
        seed: int | np.random.Generator,
        shuffle: bool = True,
        drop_last: bool = False,
        flip_prob: float = 0.0,
        num_epochs: int | None = None,
    ) -> None:
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        if drop_last and batch_size > len(images):
            raise ValueError(f"drop_last with batch_size {batch_size} > {len(images)} examples")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], not {flip_prob}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.flip_prob = flip_prob
        self.num_epochs = num_epochs
        self.epoch = 0
        self.position = 0  # index into this epoch's order of the next batch's first example
        self._order: np.ndarray | None = None  # None until the epoch's first batch
        self._epoch_rng_state: dict[str, Any] | None = None  # rng state the order was drawn from

    @property
    def steps_per_epoch(self) -> int:
        """Number of batches in one epoch."""
        full, rest = divmod(len(self.images), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._order is None:
            if self.num_epochs is not None and self.epoch >= self.num_epochs:
                raise StopIteration
            self._start_epoch()
        assert self._order is not None
        index = self._order[self.position : self.position + self.batch_size]
        images = self.images[index]
        if self.flip_prob > 0.0:
            flip = self.rng.random(len(index)) < self.flip_prob
            images[flip] = images[flip][..., ::-1]
        labels = None if self.labels is None else self.labels[index]
        self.position += self.batch_size
        if self.position >= self.steps_per_epoch * self.batch_size:
            self.epoch += 1
            self.position = 0
            self._order = None
            self._epoch_rng_state = None
        return images, labels

    def _start_epoch(self) -> None:
        self._epoch_rng_state = self.rng.bit_generator.state
        n = len(self.images)
        self._order = self.rng.permutation(n) if self.shuffle else np.arange(n)

    def state_dict(self) -> dict[str, Any]:
        """The position and generator state, as JSON-able plain Python values."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "rng_state": self.rng.bit_generator.state,
            "epoch_rng_state": self._epoch_rng_state,
            "num_examples": len(self.images),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` taken on an iterator over the same data and settings."""
        expected = (len(self.images), self.batch_size)
        if (state["num_examples"], state["batch_size"]) != expected:
            raise ValueError(
                f"state is for {state['num_examples']} examples in batches of "
                f"{state['batch_size']}, this iterator has {expected[0]} in batches of "
                f"{expected[1]}"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = None
        self._epoch_rng_state = None
        if state["epoch_rng_state"] is not None:  # mid-epoch: redraw this epoch's order
            self.rng.bit_generator.state = state["epoch_rng_state"]
            self._start_epoch()
        self.rng.bit_generator.state = state["rng_state"]
