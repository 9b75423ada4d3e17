"""Helpers of the trainer tests: a micro training configuration (the `digits` fixture, the
first 64 MNIST training digits, is tests/conftest.py's, loaded once per session)."""

from __future__ import annotations

from tinydiff.training import TrainConfig

MICRO_RUN = dict(model="micro", steps=4, batch_size=8, warmup_steps=2, checkpoint_every=2,
                 lr=2e-3)


def micro_config(**overrides) -> TrainConfig:
    """A few steps of the micro model (MICRO_RUN), with `overrides`."""
    return TrainConfig(**{**MICRO_RUN, **overrides})
