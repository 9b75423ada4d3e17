"""The matrix products of mnist-tiny's convolutions in each BLAS at hand, on their exact shapes.

    python benchmarks/bench_blas.py [--threads 2] [--batch 32] [--repeats 7]

For every convolution the UNet runs (counted as often as it runs them), the products its
fast path makes (`kernels/conv_gemm.py`: forward `cols @ W`, input gradient `dout @ W^T` or
the flipped-kernel product, weight gradient `cols^T @ dout`), per chunk of images as that
file cuts them, timed in float32 with:

- NumPy's BLAS (OpenBLAS in NumPy's PyPI wheel): what tinydiff uses;
- BLIS (`pip install blis`), through `blis.py.gemm`;
- MKL (`pip install mkl`), its `cblas_sgemm` called through ctypes;
- PyTorch's `torch.mm` (MKL inside), when torch is importable.

A library that is missing is skipped, with how to get it. Prints, per product kind, the
milliseconds one training step's products take (the batch in `--batch` images, as one of
the trainer's slices gets them) and GFLOP/s, and the total. Every library's result is
checked against NumPy's. Threads: `--threads` for each library (set before it loads).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from timing import median_seconds

Product = tuple[str, int, int, int, bool]  # (kind, m, k, n, a transposed): (m, k) @ (k, n)


def unet_products(batch: int) -> Counter:
    """How many times one training step makes each product, per conv of mnist-tiny."""
    import autograd
    from autograd import nn
    from autograd.kernels import conv_gemm
    from autograd.kernels.conv import Window
    from tinydiff.models import build_model

    model = build_model("mnist-tiny")
    convs: list[tuple[int, int, int, int, int, int]] = []

    def record(module, args):
        x = args[0]
        convs.append((module.in_channels, module.out_channels, module.kernel_size[0],
                      module.stride[0], module.padding[0], x.shape[-1]))

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(record)
    with autograd.no_grad():
        model(np.zeros((1, 1, 28, 28), np.float32), np.zeros(1, np.int64))

    products: Counter = Counter()
    for cin, cout, k, stride, padding, size in convs:
        out = (size + 2 * padding - k) // stride + 1
        window = Window((k, k), (stride, stride), (padding, padding), (1, 1), (out, out))
        pixels, rows = out * out, k * k * cin
        chunks = conv_gemm._image_chunks(batch, pixels * rows * 4, np.empty(0, np.float32))
        for chunk in chunks:
            m = (chunk.stop - chunk.start) * pixels
            products[("forward", m, rows, cout, False)] += 1
            products[("weight grad", rows, m, cout, True)] += 1
        pointwise = conv_gemm._is_pointwise(window, (size, size))
        if stride == 1 and cout < cin and not pointwise:  # the flipped-kernel product
            flipped_rows = k * k * cout
            for chunk in conv_gemm._image_chunks(batch, size * size * flipped_rows * 4,
                                                 np.empty(0, np.float32)):
                m = (chunk.stop - chunk.start) * size * size
                products[("input grad", m, flipped_rows, cin, False)] += 1
        else:
            for chunk in chunks:
                m = (chunk.stop - chunk.start) * pixels
                products[("input grad", m, cout, rows, False)] += 1
    return products


# ---- the libraries: each a function (a, b, out) -> out = a @ b, or a reason it is missing ---


def numpy_matmul(a, b, out):
    np.matmul(a, b, out=out)


def load_blis() -> Callable | str:
    try:
        from blis.py import gemm
    except ImportError:
        return "BLIS: not installed (pip install blis)"

    def run(a, b, out):
        if a.flags.c_contiguous:
            gemm(a, b, out=out, beta=0.0)
        else:  # a transposed view: its base is contiguous
            gemm(a.T, b, out=out, trans1=True, beta=0.0)

    return run


def load_mkl(threads: int) -> Callable | str:
    libraries = [p for prefix in {sys.prefix, sys.base_prefix}
                 for p in glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*"))]
    if not libraries:
        return "MKL: not installed (pip install mkl)"
    mkl = ctypes.CDLL(libraries[0])
    mkl.MKL_Set_Num_Threads(ctypes.c_int(threads))
    sgemm = mkl.cblas_sgemm
    sgemm.restype = None
    sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                           ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                                           ctypes.c_void_p, ctypes.c_int]
    row_major, no_trans, trans = 101, 111, 112

    def run(a, b, out):
        m, k = a.shape
        transposed = not a.flags.c_contiguous
        lda = a.strides[1] // 4 if transposed else a.strides[0] // 4
        sgemm(row_major, trans if transposed else no_trans, no_trans, m, b.shape[1], k, 1.0,
              a.ctypes.data, lda, b.ctypes.data, b.strides[0] // 4, 0.0, out.ctypes.data,
              out.strides[0] // 4)

    return run


def load_torch(threads: int) -> Callable | str:
    try:
        import torch
    except ImportError:
        return "PyTorch: not installed (see bench_vs_torch.py for a separate environment)"
    torch.set_num_threads(threads)

    def run(a, b, out):
        torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32,
                        help="images per product (a trainer slice of batch 64 has 32)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for name in ("OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS", "MKL_NUM_THREADS",
                 "OMP_NUM_THREADS"):
        os.environ[name] = str(args.threads)  # read when each library loads

    import autograd

    autograd.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")  # autograd keeps BLAS on one thread
    products = unet_products(args.batch)
    libraries: dict[str, Callable] = {"numpy (OpenBLAS)": numpy_matmul}
    for name, found in (("BLIS", load_blis()), ("MKL", load_mkl(args.threads)),
                        ("torch.mm", load_torch(args.threads))):
        if isinstance(found, str):
            print(found)
        else:
            libraries[name] = found

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    print(f"{cpu}; {args.threads} thread(s); batch {args.batch}; float32; "
          f"median of {args.repeats}; ms per training step's products (GFLOP/s)")
    rng = np.random.default_rng(0)
    totals = {name: Counter() for name in libraries}
    flops: Counter = Counter()
    for (kind, m, k, n, transposed), count in products.items():
        a = rng.standard_normal((k, m) if transposed else (m, k), dtype=np.float32)
        a = a.T if transposed else a
        b = rng.standard_normal((k, n), dtype=np.float32)
        expected = a @ b
        flops[kind] += 2.0 * m * k * n * count
        for name, run in libraries.items():
            out = np.empty((m, n), np.float32)
            run(a, b, out)
            error = np.abs(out - expected).max() / np.abs(expected).max()
            if error > 1e-4:
                raise SystemExit(f"{name}: ({m}, {k}) @ ({k}, {n}) differs from NumPy's "
                                 f"product by {error:.1e} of its largest value")
            totals[name][kind] += median_seconds(partial(run, a, b, out), args.repeats) * count

    kinds = ["forward", "input grad", "weight grad"]
    print(f"{'library':<18}" + "".join(f"{kind:>22}" for kind in [*kinds, "total"]))
    for name, seconds in totals.items():
        cells = [(seconds[kind], flops[kind]) for kind in kinds]
        cells.append((sum(seconds.values()), sum(flops.values())))
        print(f"{name:<18}" + "".join(f"{s * 1e3:13.1f} ({f / s / 1e9:5.1f})" for s, f in cells))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
