"""Compiled CPU kernels (numba), each beside a plain-NumPy reference implementation.

Set the environment variable `AUTOGRAD_REFERENCE_KERNELS=1` to run the whole engine on the
references instead (slow; for checking the kernels)."""

from __future__ import annotations

import os

# numba's parallel kernels run on an OpenMP pool whose threads, by default, spin after each
# kernel and starve the BLAS threads of the next matrix product: on 2 cores that made a
# UNet training step 1.5-2x slower (benchmarks/bench_unet.py). Passive waiting fixes it.
# It must be set before the pool starts (the first parallel kernel); a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def use_reference_kernels() -> bool:
    return os.environ.get("AUTOGRAD_REFERENCE_KERNELS", "0") not in ("", "0", "false")
