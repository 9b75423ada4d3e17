"""Classifier guidance against classifier-free guidance, on one class-conditional checkpoint.

    python examples/classifier_guidance.py --ckpt runs/default/ckpt.npz \
        [--classifier noisy-classifier.npz] [--n 256] [--steps 20] [--out classifier-guidance.png]

Classifier guidance (Dhariwal & Nichol 2021) asks the diffusion model for no digit (its null
label) and pushes every DDIM step along s * grad_x log p(y | x_t, t) of a classifier trained
on noised images: eps_hat = eps - sqrt_one_minus_alphas_cumprod_t s grad. Classifier-free
guidance mixes the model's own conditional and unconditional predictions with weight w.
Scale 0 of either is the same unconditional model, so that row is sampled once. Every
setting starts from the same noise, asks for the digits 0-9 in turn, and is scored by
tinydiff.eval (MNIST-FID, confidence, fraction classified as the requested digit, per digit
too). The figure has one row per setting, the digits 0-9 as columns.

The noise-aware classifier is loaded from --classifier, or trained there when missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import autograd
from tinydiff import eval as evaluation
from tinydiff.data import load_mnist
from tinydiff.guidance import (
    classifier_grad_fn,
    load_noise_aware_classifier,
    noised_accuracy,
    save_classifier,
    train_noise_aware_classifier,
)
from tinydiff.plots import plot_labelled_rows
from tinydiff.samplers import class_guidance, sample
from tinydiff.training import load_for_sampling


def noise_aware_classifier(args: argparse.Namespace, schedule):
    """The classifier at args.classifier, trained and saved there first if it is missing."""
    if args.classifier.exists():
        print(f"noise-aware classifier: {args.classifier}")
        return load_noise_aware_classifier(args.classifier, schedule)
    images, labels = load_mnist("train")
    started = time.perf_counter()
    classifier = train_noise_aware_classifier(
        images, labels, schedule, steps=args.classifier_steps,
        batch_size=args.classifier_batch, seed=args.seed, progress=False)
    print(f"trained the noise-aware classifier: {args.classifier_steps} steps of "
          f"{args.classifier_batch} in {time.perf_counter() - started:.0f} s")
    save_classifier(classifier, args.classifier, schedule)
    test_images, test_labels = load_mnist("test", limit=args.accuracy_images)
    for t in args.accuracy_t:
        accuracy = noised_accuracy(classifier, schedule, test_images, test_labels, t,
                                   seed=args.seed)
        print(f"  accuracy on {len(test_images)} noised test images at t={t}: {accuracy:.4f}")
    return classifier


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--classifier", type=Path, default=Path("noisy-classifier.npz"))
    parser.add_argument("--classifier-steps", type=int, default=1500)
    parser.add_argument("--classifier-batch", type=int, default=64)
    parser.add_argument("--accuracy-t", type=int, nargs="+", default=[0, 250, 500, 750])
    parser.add_argument("--accuracy-images", type=int, default=10000)
    parser.add_argument("--cg-scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--cfg-scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--n", type=int, default=256, help="samples per setting (digits 0-9 "
                        "in turn)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--batch", type=int, default=128, help="samples per sampler call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="autograd.set_num_threads")
    parser.add_argument("--out", type=Path, default=Path("classifier-guidance.png"))
    parser.add_argument("--table", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.threads:
        autograd.set_num_threads(args.threads)
    model, schedule, prediction_type, _ = load_for_sampling(args.ckpt)
    if model.config.num_classes is None:
        raise SystemExit(f"{args.ckpt} holds an unconditional model; train one with "
                         "`tinydiff train --class-conditional`")
    classifier = noise_aware_classifier(args, schedule)
    size = model.config.image_size
    labels = np.arange(args.n) % 10
    noise = np.random.default_rng(args.seed).standard_normal(
        (args.n, 1, size, size)).astype(np.float32)

    def generate(options_for) -> tuple[np.ndarray, float]:
        """All n samples, `options_for(labels of a batch)` giving sample()'s guidance."""
        started, parts = time.perf_counter(), []
        for start in range(0, args.n, args.batch):
            batch = slice(start, start + args.batch)
            with autograd.no_grad():
                parts.append(sample(model, schedule, noise[batch].shape, sampler="ddim",
                                    num_inference_steps=args.steps, x_T=noise[batch],
                                    prediction_type=prediction_type,
                                    **options_for(labels[batch])))
        return np.concatenate(parts), time.perf_counter() - started

    settings = [("CG", s) for s in args.cg_scales] + [("CFG", w) for w in args.cfg_scales]
    results, unconditional = {}, None
    for method, scale in settings:
        if scale == 0 and unconditional is not None:  # CG s=0 and CFG w=0: the same samples
            results[method, scale] = unconditional
            continue
        if method == "CG":
            def options(batch_labels, scale=scale):
                return {**class_guidance(model, batch_labels, 0.0),  # the null label
                        "classifier_grad_fn": classifier_grad_fn(classifier, batch_labels),
                        "classifier_scale": scale}
        else:
            def options(batch_labels, scale=scale):
                return class_guidance(model, batch_labels, scale)
        results[method, scale] = generate(options)
        if scale == 0:
            unconditional = results[method, scale]
        print(f"sampled {method} at scale {scale:g} in {results[method, scale][1]:.0f} s")

    eval_classifier = evaluation.load_classifier()
    header = (f"{'method':<6}{'scale':>6}{'n':>6}{'steps':>6}{'FID':>8}{'conf':>7}"
              f"{'digit':>7}  {'per-digit accuracy 0..9':<50}{'wall s':>8}")
    lines = [f"DDIM {args.steps} steps, {args.n} samples per setting (digits 0-9 in turn), "
             f"seed {args.seed}; CG = classifier guidance of the unconditional (null-label) "
             "model, CFG = classifier-free guidance", header]
    rows, reference, reports = {}, None, {}
    for (method, scale), (samples, seconds) in results.items():
        if id(samples) not in reports:  # the shared scale-0 samples are scored once
            reports[id(samples)] = evaluation.evaluate_samples(
                samples, eval_classifier, seed=args.seed, labels=labels)
        report = reports[id(samples)]
        predicted = evaluation.predict(eval_classifier, np.clip(samples, -1, 1))[1].argmax(1)
        per_digit = " ".join(f"{np.mean(predicted[labels == d] == d):.2f}"
                             if np.any(labels == d) else "  - " for d in range(10))
        lines.append(f"{method:<6}{scale:>6g}{args.n:>6}{args.steps:>6}{report.fid:>8.2f}"
                     f"{report.mean_confidence:>7.3f}{report.label_accuracy:>7.3f}  "
                     f"{per_digit:<50}{seconds:>8.0f}")
        reference = report.reference_fid
        name = "s" if method == "CG" else "w"
        rows[f"{method} {name}={scale:g}"] = samples[:10]
    lines.append(f"reference MNIST-FID of {args.n} training images vs the test set: "
                 f"{reference:.2f}; wall s: sampling time of the setting "
                 f"(threads: {autograd.get_num_threads()}; a shared scale-0 row is timed once)")
    table = "\n".join(lines)
    print(table)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table + "\n")
    path = plot_labelled_rows(rows, args.out, title="classifier guidance (CG, scale s) vs "
                              "classifier-free guidance (CFG, w); digits 0-9")
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
