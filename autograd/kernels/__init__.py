"""Compiled CPU kernels (numba), each beside a plain-NumPy reference implementation.

Set the environment variable `AUTOGRAD_REFERENCE_KERNELS=1` to run the whole engine on the
references instead (slow; for checking the kernels)."""

from __future__ import annotations

import os


def use_reference_kernels() -> bool:
    return os.environ.get("AUTOGRAD_REFERENCE_KERNELS", "0") not in ("", "0", "false")
