"""The default random generator: every random draw in the library goes through a
`numpy.random.Generator`, either one passed as `generator=` or this seeded default. Draws
are made on the host and then moved to the device that needs them, so one seed gives the
same numbers on every device."""

from __future__ import annotations

import numpy as np

from autograd.backend import Device, to_device

_default = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator (used when no `generator=` is given); returns it."""
    global _default
    _default = np.random.default_rng(seed)
    return _default


def default_generator() -> np.random.Generator:
    return _default


def resolve(generator: np.random.Generator | None) -> np.random.Generator:
    """The generator to draw from: the one given, else the default."""
    if generator is None:
        return _default
    if not isinstance(generator, np.random.Generator):
        raise TypeError(
            f"generator must be a numpy.random.Generator, got {type(generator).__name__}"
        )
    return generator


def dropout_keep_mask(shape: tuple[int, ...], p: float, dtype,
                      generator: np.random.Generator | None = None,
                      device: str | Device = "cpu"):
    """An array of `shape` on `device` that is 1 / (1 - p) where an element is kept
    (probability 1 - p) and 0 where it is dropped; all zeros for p = 1. Drawn on the host
    (float32 uniforms from the generator), then moved."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if p == 1.0:
        mask = np.zeros(shape, dtype)
    else:
        keep = resolve(generator).random(shape, dtype=np.float32) >= p
        mask = np.asarray(keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype))
    return to_device(mask, device)
