"""Tests for tinydiff.data: MNIST loading and verification, downloads, and the batch iterator."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import struct
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tinydiff import data
from tinydiff.data import BatchIterator, MNISTError

# --- Synthetic IDX files ------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An unsigned-byte IDX file holding ``array``."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def small_split(n: int = 12) -> dict[str, bytes]:
    """Decompressed IDX bytes of a tiny train and test split, keyed by MNIST file name."""
    rng = np.random.default_rng(0)
    files = {}
    for split in ("train", "test"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        files[data.FILE_NAMES[split, "images"]] = idx_bytes(images, data.IMAGE_MAGIC)
        files[data.FILE_NAMES[split, "labels"]] = idx_bytes(labels, data.LABEL_MAGIC)
    return files


@pytest.fixture
def synthetic(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Tiny MNIST files whose checksums are injected as the expected ones."""
    files = small_split()
    checksums = {name: hashlib.sha256(raw).hexdigest() for name, raw in files.items()}
    monkeypatch.setattr(data, "EXPECTED_SHA256", checksums)
    return files


@pytest.fixture
def no_shipped_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide the shipped copy and point the cache at an empty ``tmp_path / "home"``."""
    monkeypatch.setattr(data, "shipped_data_dir", lambda: None)
    monkeypatch.setenv("TINYDIFF_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_files(directory: Path, files: dict[str, bytes], compress: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)


# --- Real shipped data --------------------------------------------------------------------------


@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_shipped_mnist_loads_scaled(split: str, n: int) -> None:
    images, labels = data.load_mnist(split)
    assert images.shape == (n, 1, 28, 28) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))


def test_shipped_mnist_is_verified_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = data.load_mnist_uint8("test")
    assert data.load_mnist_uint8("test")[0] is first  # verified once, then reused
    assert first.dtype == np.uint8 and not first.flags.writeable

    wrong = dict(data.EXPECTED_SHA256, **{"t10k-labels-idx1-ubyte": "0" * 64})
    monkeypatch.setattr(data, "EXPECTED_SHA256", wrong)
    with pytest.raises(MNISTError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        data.load_mnist_uint8("test")


def test_shipped_files_match_the_published_checksums() -> None:
    shipped = data.shipped_data_dir()
    assert shipped is not None
    for name, expected in data.EXPECTED_SHA256.items():
        raw = gzip.decompress((shipped / f"{name}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == expected


def test_scale_and_unscale_round_trip() -> None:
    pixels = np.arange(256, dtype=np.uint8)
    scaled = data.scale_images(pixels)
    assert scaled.dtype == np.float32 and scaled[0] == -1.0 and scaled[-1] == 1.0
    np.testing.assert_array_equal(data.unscale_images(scaled), pixels)


def test_classes_and_limit_select_examples() -> None:
    images, labels = data.load_mnist("test", classes=[3, 7], limit=50)
    assert images.shape == (50, 1, 28, 28)
    assert set(labels) == {3, 7}


# --- data_dir and broken files ------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_data_dir_accepts_gzip_and_plain_files(
    synthetic: dict[str, bytes], tmp_path: Path, compress: bool
) -> None:
    write_files(tmp_path, synthetic, compress=compress)
    images, labels = data.load_mnist_uint8("train", data_dir=tmp_path)
    expected = np.frombuffer(synthetic["train-images-idx3-ubyte"], np.uint8, offset=16)
    np.testing.assert_array_equal(images.ravel(), expected)
    np.testing.assert_array_equal(labels, np.arange(12) % 10)


def corrupt_gzip(raw: bytes) -> bytes:
    compressed = bytearray(gzip.compress(raw))
    compressed[len(compressed) // 2] ^= 0xFF
    return bytes(compressed)


BROKEN_LABEL_FILES = {
    "truncated gzip": (
        lambda raw: gzip.compress(raw)[:-20],
        "not a valid gzip file, truncated or corrupt",
    ),
    "corrupt gzip": (corrupt_gzip, "not a valid gzip file, truncated or corrupt"),
    "truncated payload": (lambda raw: gzip.compress(raw[:-3]), "truncated: 17 bytes"),
    "truncated header": (lambda raw: gzip.compress(raw[:6]), "truncated: 6 bytes"),
    "image magic on labels": (
        lambda raw: gzip.compress(struct.pack(">I", 2051) + raw[4:]),
        "bad magic number 2051, expected 2049",
    ),
    "not IDX": (lambda raw: gzip.compress(b"<html>404</html>"), "bad magic number"),
    "one changed byte": (
        lambda raw: gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1])),
        "checksum mismatch: expected SHA-256 [0-9a-f]{64}, got [0-9a-f]{64}",
    ),
    "trailing bytes": (lambda raw: gzip.compress(raw + b"\0"), "1 trailing bytes"),
}


@pytest.mark.parametrize("breakage", BROKEN_LABEL_FILES)
def test_broken_file_names_file_problem_and_remedy(
    synthetic: dict[str, bytes], tmp_path: Path, breakage: str
) -> None:
    write_files(tmp_path, synthetic)
    name = "t10k-labels-idx1-ubyte"
    damage, problem = BROKEN_LABEL_FILES[breakage]
    (tmp_path / f"{name}.gz").write_bytes(damage(synthetic[name]))
    with pytest.raises(MNISTError, match=rf"{name}.gz: {problem}.*--data-dir") as excinfo:
        data.load_mnist_uint8("test", data_dir=tmp_path)
    assert str(tmp_path) in str(excinfo.value)


def test_missing_file_in_data_dir(synthetic: dict[str, bytes], tmp_path: Path) -> None:
    write_files(tmp_path, {k: v for k, v in synthetic.items() if k != "train-images-idx3-ubyte"})
    with pytest.raises(MNISTError, match=r"train-images-idx3-ubyte.gz: missing.*--data-dir"):
        data.load_mnist_uint8("train", data_dir=tmp_path)


def test_missing_everywhere_without_download(no_shipped_data: Path) -> None:
    with pytest.raises(MNISTError, match=r"train-images-idx3-ubyte: missing.*allow the download"):
        data.load_mnist_uint8("train", download=False)


def test_cache_dir_follows_tinydiff_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TINYDIFF_HOME", str(tmp_path / "th"))
    assert data.cache_dir() == tmp_path / "th"
    monkeypatch.delenv("TINYDIFF_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / ".cache" / "tinydiff"


# --- Downloads from a loopback HTTP server ------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT_S", 5.0)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_skips_missing_and_corrupt_mirrors(
    synthetic: dict[str, bytes], no_shipped_data: Path, mirror_root: tuple[Path, str]
) -> None:
    root, url = mirror_root
    write_files(root / "good", synthetic)
    (root / "corrupt").mkdir()
    for name, raw in synthetic.items():
        (root / "corrupt" / f"{name}.gz").write_bytes(gzip.compress(raw[:-1] + b"\x01"))
    mirrors = [f"{url}/absent/", f"{url}/corrupt", f"{url}/good/"]

    images, labels = data.load_mnist_uint8("test", mirrors=mirrors)

    assert images.shape == (12, 28, 28) and labels.shape == (12,)
    downloaded = sorted(p.name for p in (no_shipped_data / "mnist").iterdir())
    assert downloaded == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # Now cached: loads with no mirror at all.
    data.load_mnist_uint8("test", download=False)


def test_download_failing_everywhere_lists_each_mirror(
    synthetic: dict[str, bytes], no_shipped_data: Path, mirror_root: tuple[Path, str]
) -> None:
    root, url = mirror_root
    (root / "corrupt").mkdir()
    (root / "corrupt" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    mirrors = [f"{url}/absent/", f"{url}/corrupt/"]
    with pytest.raises(MNISTError, match="every download failed") as excinfo:
        data.load_mnist_uint8("train", mirrors=mirrors)
    message = str(excinfo.value)
    assert "absent/train-images-idx3-ubyte.gz: HTTP Error 404" in message
    assert "corrupt/train-images-idx3-ubyte.gz: MNIST file" in message
    assert "not a valid gzip file" in message
    assert [p.name for p in (no_shipped_data / "mnist").iterdir()] == []  # no partial files


# --- BatchIterator ------------------------------------------------------------------------------


def indexed_dataset(n: int = 103) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 1, 2, 3) whose every value is distinct; labels = the index."""
    images = np.arange(n * 6, dtype=np.float32).reshape(n, 1, 2, 3)
    return images, np.arange(n)


def labels_of(batches: list[tuple[np.ndarray, np.ndarray | None]]) -> list[list[int]]:
    return [labels.tolist() for _, labels in batches]


def take(iterator: BatchIterator, count: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    return [next(iterator) for _ in range(count)]


def test_batches_depend_only_on_the_seed() -> None:
    images, labels = indexed_dataset()
    same_a = take(BatchIterator(images, labels, batch_size=10, seed=1), 25)
    same_b = take(BatchIterator(images, labels, batch_size=10, seed=1), 25)
    other = take(BatchIterator(images, labels, batch_size=10, seed=2), 25)
    generator = take(
        BatchIterator(images, labels, batch_size=10, seed=np.random.default_rng(1)), 25
    )
    assert labels_of(same_a) == labels_of(same_b) == labels_of(generator)
    assert labels_of(same_a) != labels_of(other)
    for (x, y), (x2, _) in zip(same_a, same_b, strict=True):
        np.testing.assert_array_equal(x, images[y])
        np.testing.assert_array_equal(x, x2)


@pytest.mark.parametrize("drop_last, sizes", [(False, [10] * 10 + [3]), (True, [10] * 10)])
def test_every_example_once_per_epoch(drop_last: bool, sizes: list[int]) -> None:
    images, labels = indexed_dataset()
    iterator = BatchIterator(
        images, labels, batch_size=10, seed=0, drop_last=drop_last, num_epochs=2
    )
    assert iterator.steps_per_epoch == len(sizes)
    batches = list(iterator)
    assert len(batches) == 2 * len(sizes)
    epochs = [batches[: len(sizes)], batches[len(sizes) :]]
    for epoch in epochs:
        assert [len(y) for _, y in epoch] == sizes
        seen = np.concatenate([y for _, y in epoch])
        assert len(np.unique(seen)) == len(seen) == sum(sizes)
    assert labels_of(epochs[0]) != labels_of(epochs[1])  # reshuffled each epoch


def test_unshuffled_iteration_is_in_order() -> None:
    images, labels = indexed_dataset(25)
    batches = list(
        BatchIterator(images, labels, batch_size=10, seed=0, shuffle=False, num_epochs=1)
    )
    assert labels_of(batches) == [list(range(10)), list(range(10, 20)), list(range(20, 25))]


@pytest.mark.parametrize("steps_before_save", [0, 4, 11, 15])
def test_resume_from_state_dict_gives_the_same_batches(steps_before_save: int) -> None:
    images, labels = indexed_dataset()
    settings = dict(batch_size=10, flip_prob=0.5)
    original = BatchIterator(images, labels, seed=7, **settings)
    take(original, steps_before_save)
    state = json.loads(json.dumps(original.state_dict()))

    resumed = BatchIterator(images, labels, seed=123, **settings)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(take(original, 30), take(resumed, 30), strict=True):
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(x, x2)


def test_resume_rejects_state_for_other_data() -> None:
    images, labels = indexed_dataset()
    state = BatchIterator(images, labels, batch_size=10, seed=0).state_dict()
    with pytest.raises(ValueError, match="103 examples in batches of 10"):
        BatchIterator(images[:50], labels[:50], batch_size=10, seed=0).load_state_dict(state)


def test_flips_mirror_the_width_axis_through_the_generator() -> None:
    images, labels = indexed_dataset()
    never = take(BatchIterator(images, labels, batch_size=10, seed=3), 11)
    always = take(BatchIterator(images, labels, batch_size=10, seed=3, flip_prob=1.0), 11)
    for (x, y), (x_flipped, y_flipped) in zip(never, always, strict=True):
        np.testing.assert_array_equal(y, y_flipped)
        np.testing.assert_array_equal(x, images[y])
        np.testing.assert_array_equal(x_flipped, images[y][..., ::-1])

    some = take(BatchIterator(images, labels, batch_size=103, seed=3, flip_prob=0.5), 1)
    x, y = some[0]
    flipped = np.all(x == images[y][..., ::-1], axis=(1, 2, 3))
    assert 0 < flipped.sum() < 103
    np.testing.assert_array_equal(x[~flipped], images[y][~flipped])


def test_iterator_gathers_batches_without_copying_the_dataset() -> None:
    images = np.zeros((4000, 1, 28, 28), dtype=np.float32)  # 12.5 MB
    labels = np.arange(4000)
    iterator = BatchIterator(images, labels, batch_size=32, seed=0, num_epochs=1)
    assert iterator.images is images and iterator.labels is labels

    tracemalloc.start()
    try:
        for x, y in iterator:
            assert x.shape[0] == y.shape[0] <= 32
            assert not np.shares_memory(x, images)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < images.nbytes / 20
