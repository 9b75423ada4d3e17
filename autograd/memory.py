"""Keep freed memory for the next step: no page faults in a training loop's steady state.

A training step allocates the same large buffers (activations, columns, gradients) that the
previous step freed. glibc's malloc gives blocks above its mmap threshold back to the kernel
on free, and trims the heap's free top when it passes the trim threshold; the next step's
buffers are then fresh pages, each faulted in (and zeroed by the kernel) on first touch:
about 27,000 faults per mnist-tiny training step at batch 32, 38,000 at batch 64
(`benchmarks/bench_unet.py` prints them). With

    M_MMAP_THRESHOLD = 32 MiB  blocks below it come from the heap (glibc's largest setting)
    M_TRIM_THRESHOLD = 1 GiB   free heap memory up to 1 GiB stays mapped for reuse
    M_TOP_PAD        = 64 MiB  the heap grows in large steps

a step reuses the memory the last one freed: a handful of faults per step instead. Peak
memory (RSS) rises by about a tenth; the memory stays with the process, which is what a
training or sampling loop wants. `import autograd` applies this once, on Linux with glibc;
`AUTOGRAD_KEEP_FREED_MEMORY=0` leaves malloc as it is, and glibc's own `MALLOC_*_`
environment variables or `GLIBC_TUNABLES` (which the user set on purpose) also leave it.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt's parameters (malloc.h)
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set glibc malloc to keep freed memory for reuse (see the module docstring). Returns
    whether it did: False off Linux/glibc, when AUTOGRAD_KEEP_FREED_MEMORY=0, or when the
    environment already tunes malloc."""
    if os.environ.get("AUTOGRAD_KEEP_FREED_MEMORY", "1") in ("0", "false", ""):
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items())


KEEPS_FREED_MEMORY = keep_freed_memory()
