"""autograd.memory: after `import autograd`, a loop that frees and reallocates the same large
buffers reuses the memory instead of faulting fresh pages in every iteration."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import autograd

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's")

# Faults per round of allocating, filling and freeing 40 buffers of 1 MiB, 6 of 8 MiB and
# 2 of 20 MiB (the sizes of a UNet step's activations, columns and gradients).
ROUNDS = """
import resource
import numpy as np
import autograd
def rounds():
    for size_mib, count in ((1, 40), (8, 6), (20, 2)):
        buffers = [np.ones(size_mib << 18, np.float32) for _ in range(count)]
        del buffers
for _ in range(3):
    rounds()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    rounds()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5,
      autograd.memory.KEEPS_FREED_MEMORY)
"""


def faults_per_round(**env: str) -> tuple[float, bool]:
    clean = {k: v for k, v in os.environ.items()
             if k not in autograd.memory.USER_SETTINGS + ("AUTOGRAD_KEEP_FREED_MEMORY",)}
    out = subprocess.run([sys.executable, "-c", ROUNDS], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), out[1] == "True"


@glibc_only
def test_freed_buffers_are_reused_without_page_faults():
    faults, kept = faults_per_round()
    assert kept and faults < 100  # 200 MiB per round: 51,200 pages if faulted afresh


@glibc_only
def test_opting_out_leaves_malloc_as_it_is():
    # glibc's defaults hand these blocks back to the kernel: the measurement above can fail
    faults, kept = faults_per_round(AUTOGRAD_KEEP_FREED_MEMORY="0")
    assert not kept and faults > 5000
    faults, kept = faults_per_round(MALLOC_TRIM_THRESHOLD_="131072")  # the user's own tuning
    assert not kept
