#!/usr/bin/env bash
# The GPU leg in one run, for a machine with an NVIDIA GPU and CuPy (e.g. the workplace's
# H200 image: python3 there has cupy-cuda13x, numba, numpy, pytest and hypothesis).
#
#     bash benchmarks/gpu_checks.sh [OUT_DIR] [PARTS]     (PARTS: default "tests bench train")
#
# 1. the test suite, whose "cuda" legs (skipped without a GPU) then run the CUDA kernels
#    against their references and every device test against the CPU;
# 2. bench_unet.py for mnist-tiny and mnist-small on the GPU and, in the same run, on the CPU;
# 3. the default training run (`tinydiff train` with no options but --device cuda), timed.
# Everything it prints is also written to OUT_DIR (default: benchmarks/gpu-results), in five
# files: tests.txt, bench.txt, default-run.txt and the run's samples and loss curve.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/gpu-results}"
parts="${2:-tests bench train}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 - <<'EOF' 2>&1 | tee "$out/bench.txt"
import autograd, cupy
print("cupy", cupy.__version__, "GPUs:", autograd.cuda.device_count(),
      cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
EOF
if [[ " $parts " == *" tests "* ]]; then
    python3 -m pytest -q -p no:cacheprovider --maxfail=30 tests 2>&1 | tee "$out/tests.txt"
fi
if [[ " $parts " == *" bench "* ]]; then
    for preset in mnist-tiny mnist-small; do
        for device in cuda cpu; do
            python3 benchmarks/bench_unet.py --preset "$preset" --device "$device" --steps 10 \
                2>&1 | tee -a "$out/bench.txt"
        done
    done
    python3 benchmarks/bench_layers.py --device cuda 2>&1 | tee -a "$out/bench.txt"
fi
if [[ " $parts " == *" train "* ]]; then
    run="$(mktemp -d)/default"
    { time python3 -m tinydiff train --out "$run" --device cuda --no-progress; } \
        2>&1 | tee "$out/default-run.txt"
    cp "$run/samples.png" "$out/default-run-samples.png" 2>/dev/null
    cp "$run/loss.csv" "$out/default-run-loss.csv" 2>/dev/null
fi
