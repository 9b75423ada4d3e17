"""Time the mnist-tiny layers (batch 64, 28/14/7 px) against NumPy's own matmul rate.

    python benchmarks/bench_layers.py [--threads N] [--repeats R] [--filter S]
                                      [--device cuda] [--no-kernels]

Prints, per case: forward and forward+backward time (median of R), the achieved GFLOP/s
and that as a fraction of the float32 matmul rate NumPy reaches in the same run, and the
bytes the graph holds after one forward (saved activations); then each compiled kernel's
speedup over its plain-NumPy reference. With `--device cuda` every case runs on the GPU
(its leaves moved there after setup), each call timed to the device's completion, the rate
measured against CuPy's matmul, and the kernel table compares the CUDA kernels with the
references on CuPy arrays.

Case format (shared with benchmarks/bench_norm_attention_cases.py, whose `CASES` are
appended when that file exists): each case is
    (name: str, flops_per_call: float,
     setup: Callable[[np.random.Generator], tuple[Callable[[], Tensor], list[Tensor]]])
`flops_per_call` counts the forward's floating-point operations (a multiply-add is 2);
forward+backward is counted as 3x that (two products per forward product, as for
matmul). `setup` returns a forward closure producing the output tensor and the list of
leaf tensors requiring grad; forward+backward = forward then `.backward(ones)`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from timing import matmul_rate, median_seconds

import autograd
import autograd.nn.functional as F
from autograd.backend import array_module, to_device
from autograd.engine import topological_order
from autograd.kernels import conv as conv_kernels
from autograd.kernels.conv import channels_last
from autograd.tensor import Tensor

BATCH = 64

Setup = Callable[[np.random.Generator], tuple[Callable[[], Tensor], list[Tensor]]]


def _leaf(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return Tensor((rng.standard_normal(shape) * scale).astype(np.float32), requires_grad=True)


def conv_case(name: str, c_in: int, c_out: int, size: int, kernel: int = 3, stride: int = 1,
              upsample: bool = False) -> tuple[str, float, Setup]:
    """A conv (optionally after nearest x2 upsampling) on a (BATCH, c_in, size, size) input."""
    padding = kernel // 2
    conv_size = size * 2 if upsample else size
    out_size = (conv_size + 2 * padding - kernel) // stride + 1
    flops = 2.0 * BATCH * out_size * out_size * c_out * c_in * kernel * kernel

    def setup(rng: np.random.Generator):
        x = _leaf(rng, BATCH, c_in, size, size)
        w = _leaf(rng, c_out, c_in, kernel, kernel, scale=(c_in * kernel * kernel) ** -0.5)
        b = _leaf(rng, c_out)

        def forward() -> Tensor:
            h = F.interpolate(x, scale_factor=2) if upsample else x
            return F.conv2d(h, w, b, stride=stride, padding=padding)

        return forward, [x, w, b]

    return name, flops, setup


CASES: list[tuple[str, float, Setup]] = [
    conv_case("conv3x3 32->32 @28", 32, 32, 28),
    conv_case("conv3x3 32->64 @14", 32, 64, 14),
    conv_case("conv3x3 64->64 @7", 64, 64, 7),
    conv_case("down 3x3 s2 32 @28->14", 32, 32, 28, stride=2),
    conv_case("down 3x3 s2 64 @14->7", 64, 64, 14, stride=2),
    conv_case("conv1x1 64->32 @28", 64, 32, 28, kernel=1),
    conv_case("up x2 + conv3x3 64 @7->14", 64, 64, 7, upsample=True),
    conv_case("up x2 + conv3x3 64 @14->28", 64, 64, 14, upsample=True),
]

_EXTRA = Path(__file__).with_name("bench_norm_attention_cases.py")
if _EXTRA.exists():
    _spec = importlib.util.spec_from_file_location("bench_norm_attention_cases", _EXTRA)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    CASES += list(_module.CASES)


# ---- timing -------------------------------------------------------------------------------


def saved_bytes(output: Tensor) -> int:
    """Bytes of the arrays the graph behind `output` keeps for backward (each array once)."""
    xp = array_module(output.device)
    arrays = {}
    for node in topological_order(output.grad_fn):
        values = list(getattr(node, "saved", ())) + list(vars(node).values())
        for value in values:
            if isinstance(value, xp.ndarray):
                arrays[id(value)] = value.nbytes
    return sum(arrays.values())


def timed(fn: Callable[[], object], device: str) -> Callable[[], None]:
    """fn, then (on a GPU) a wait for the device to finish it, so the clock sees the work."""
    if autograd.device(device).type == "cpu":
        return fn
    return lambda: (fn(), autograd.cuda.synchronize())


def bench_case(name: str, flops: float, setup: Setup, repeats: int, gemm: float,
               rng: np.random.Generator, device: str = "cpu") -> str:
    forward, leaves = setup(rng)
    for leaf in leaves:  # the setups make host tensors: move them, in place
        leaf.data = to_device(leaf.data, device)
    out = forward()
    ones = Tensor(to_device(np.ones(out.shape, out.dtype), device))
    memory = saved_bytes(out)

    def forward_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        forward().backward(ones)

    with autograd.no_grad():
        t_forward = median_seconds(timed(forward, device), repeats)
    t_both = median_seconds(timed(forward_backward, device), repeats)
    rate_forward, rate_both = flops / t_forward / 1e9, 3 * flops / t_both / 1e9
    return (f"{name:<28} {t_forward * 1e3:8.2f} {rate_forward:7.1f} {rate_forward / gemm:6.0%}"
            f" {t_both * 1e3:9.2f} {rate_both:7.1f} {rate_both / gemm:6.0%}"
            f" {memory / 2**20:8.1f}")


def kernel_speedups(repeats: int, rng: np.random.Generator, device: str = "cpu") -> list[str]:
    """im2col / col2im (numba, or CUDA on a GPU) against their references (NumPy, or CuPy)
    on the mnist-tiny shapes, on the whole batch at once (on the CPU conv2d calls them on
    chunks of about 4 MB of columns)."""
    rows = []
    for channels, size, stride in ((32, 28, 1), (64, 14, 1), (64, 7, 1), (32, 28, 2)):
        out = (size + 2 - 3) // stride + 1
        window = conv_kernels.Window((3, 3), (stride, stride), (1, 1), (1, 1), (out, out))
        x = channels_last(to_device(rng.standard_normal((BATCH, channels, size, size),
                                                        dtype=np.float32), device))
        cols = conv_kernels.im2col(x, window)
        shape = f"{channels}ch @{size} s{stride}"
        for kernel, compiled, reference in (
            ("im2col", partial(conv_kernels.im2col, x, window),
             partial(conv_kernels.im2col_reference, x, window)),
            ("col2im", partial(conv_kernels.col2im, cols, x.shape, window),
             partial(conv_kernels.col2im_reference, cols, x.shape, window)),
        ):
            t_compiled = median_seconds(timed(compiled, device), repeats)
            t_reference = median_seconds(timed(reference, device), repeats)
            rows.append(f"{kernel:<8} {shape:<16} {t_compiled * 1e3:9.2f} "
                        f"{t_reference * 1e3:9.2f} {t_reference / t_compiled:7.1f}x")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="numba and BLAS threads (default: leave as is)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per case")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--no-kernels", action="store_true", help="skip the kernel table")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    if args.threads is not None:
        autograd.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    device = args.device
    on_gpu = autograd.device(device).type == "cuda"

    gemm_like = matmul_rate(BATCH * 28 * 28, 288, 32, args.repeats, rng, device=device)
    gemm_square = matmul_rate(1024, 1024, 1024, args.repeats, rng, device=device)
    where = f"device {autograd.device(device)}" if on_gpu else (
        f"threads {autograd.get_num_threads()}")
    print(f"{where}, batch {BATCH}, float32, median of {args.repeats}")
    print(f"{'cupy' if on_gpu else 'numpy'} matmul (50176, 288) @ (288, 32): "
          f"{gemm_like:6.1f} GFLOP/s   (1024, 1024) @ (1024, 1024): {gemm_square:6.1f} GFLOP/s")
    print("% = fraction of the (50176, 288) @ (288, 32) matmul rate; saved = bytes the "
          "graph holds after one forward\n")
    print(f"{'case':<28} {'fwd ms':>8} {'GF/s':>7} {'%':>6} {'f+b ms':>9} {'GF/s':>7} "
          f"{'%':>6} {'saved MB':>8}")
    for name, flops, setup in CASES:
        if args.filter in name:
            print(bench_case(name, flops, setup, args.repeats, gemm_like, rng, device),
                  flush=True)
    if not args.no_kernels:
        compiled, reference = ("cuda ms", "cupy ms") if on_gpu else ("numba ms", "numpy ms")
        print(f"\n{'kernel':<8} {'shape':<16} {compiled:>9} {reference:>9} {'speedup':>8}")
        for row in kernel_speedups(args.repeats, rng, device):
            print(row, flush=True)


if __name__ == "__main__":
    sys.exit(main())
