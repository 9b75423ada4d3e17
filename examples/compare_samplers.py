"""Fast samplers against DDIM on a trained checkpoint: MNIST-FID, classified-as-asked, mean
confidence and seconds per sample, at several step counts.

    python examples/compare_samplers.py --ckpt runs/default/ckpt.npz [--n 256]
        [--steps 5 10 20 50] [--samplers ddim dpmsolver++ dpmsolver++/karras unipc euler]

Samples ask for the digits 0-9 in turn with classifier-free guidance 2, as `tinydiff eval`
does (`cli.sample_to_files`, scored by `eval.evaluate_samples`); FID is printed with its
sample count and the train-vs-test reference at that count. A sampler name may end in
"/karras" (Karras sigmas). DPM-Solver++ is its 2M form (solver_order 2, the default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinydiff.cli import sample_to_files  # noqa: E402
from tinydiff.eval import evaluate_samples  # noqa: E402
from tinydiff.samplers import DEFAULT_GUIDANCE, SAMPLERS, model_calls_per_sample  # noqa: E402

DEFAULT_SAMPLERS = ["ddim", "dpmsolver++", "dpmsolver++/karras", "unipc", "euler"]


def sampler_spec(text: str) -> tuple[str, bool]:
    name, _, variant = text.partition("/")
    if name not in SAMPLERS or variant not in ("", "karras"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected one of {SAMPLERS}, optionally with /karras")
    if variant and name in ("ddpm", "ddim"):
        raise argparse.ArgumentTypeError(f"{name} has no Karras sigmas")
    return name, variant == "karras"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--n", type=int, default=256, help="samples per row (default 256)")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--samplers", type=sampler_spec, nargs="+",
                        default=[sampler_spec(s) for s in DEFAULT_SAMPLERS])
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--progress", action="store_true", help="a bar per row")
    args = parser.parse_args(argv)

    rows = []
    print("| sampler | steps | model calls | samples | MNIST-FID | train-vs-test reference | "
          "classified as asked | mean confidence | s/sample |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        for steps in args.steps:
            for name, karras in args.samplers:
                started = time.perf_counter()
                images, labels = sample_to_files(
                    args.ckpt, n=args.n, out=Path(scratch) / "grid.png", sampler=name,
                    steps=steps, karras=karras, guidance=args.guidance, seed=args.seed,
                    batch_size=args.batch_size, device=args.device, progress=args.progress)
                seconds = (time.perf_counter() - started) / args.n
                report = evaluate_samples(images, seed=args.seed, labels=labels)
                label = name + (" (Karras)" if karras else "")
                asked = "-" if report.label_accuracy is None else f"{report.label_accuracy:.3f}"
                calls = model_calls_per_sample(name, steps)
                print(f"| {label} | {steps} | {calls} | {report.count} | {report.fid:.2f} | "
                      f"{report.reference_fid:.2f} | {asked} | {report.mean_confidence:.3f} | "
                      f"{seconds:.3f} |", flush=True)
                rows.append({"sampler": label, "steps": steps, "model_calls": calls,
                             "report": report, "seconds_per_sample": seconds})
    return rows


if __name__ == "__main__":
    main()
