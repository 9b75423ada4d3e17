"""The `tinydiff` command line: train | sample | eval | plot-schedule."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from tinydiff.cli_checks import (
    PathError,
    UsageError,
    check_distinct,
    check_input_folder,
    check_output_file,
    check_output_folder,
    given_destinations,
    resume_conflicts,
)
from tinydiff.latent import (
    LatentPipeline,
    decode_latents,
    latent_trainer,
    read_sidecar,
    resume_latent_trainer,
    sidecar_path,
)
from tinydiff.options import (
    BetaSchedule,
    LossWeighting,
    LrSchedule,
    PredictionType,
    TimestepSampler,
    TimestepSpacing,
    VarianceType,
)
from tinydiff.samplers import DEFAULT_GUIDANCE, SAMPLER_CLASSES, SAMPLERS
from tinydiff.training import TrainConfig

DEFAULTS = TrainConfig()
GUIDANCE_HELP = (f"classifier-free guidance scale for class-conditional checkpoints (default "
                 f"{DEFAULT_GUIDANCE:g}; 1: the conditional model alone; 0: label ignored)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def device_name(text: str) -> str:
    """A --device value: "cpu", "cuda" or "cuda:N", and usable here."""
    import autograd

    try:
        device = autograd.Device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if device.type == "cuda":
        try:
            autograd.backend.cuda_module()
        except RuntimeError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return str(device)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="cpu",
                        help="cpu (default), cuda or cuda:N (a GPU, through CuPy)")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def duration(text: str) -> float:
    """A --time-budget value in seconds: "30m", "90s", "1h30m", "45" (seconds), > 0."""
    from tinydiff.time_budget import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def thread_count(text: str) -> int:
    """A --threads value: 1 to numba's NUMBA_NUM_THREADS (the cores, unless set)."""
    import numba

    value, most = int(text), numba.config.NUMBA_NUM_THREADS
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(f"must be in 1..{most} (the CPU threads available; "
                                         f"set NUMBA_NUM_THREADS to allow more), got {text}")
    return value


def add_train_parser(commands) -> None:
    from tinydiff.models import PRESETS

    p = commands.add_parser("train", help="train a diffusion model on MNIST",
                            description="Train a DDPM UNet on MNIST; writes DIR/ckpt.npz, "
                            "DIR/loss.csv, DIR/loss.png and DIR/samples.png.")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help=f"model configuration (default {DEFAULTS.model}; latent-tiny with "
                   "--vae)")
    p.add_argument("--vae", type=Path,
                   help="latent diffusion: train on the latents of this VAE (from "
                   "tinydiff.vae.save_vae or examples/latent_diffusion.py)")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS.steps,
                   help="total optimizer steps, >= 1 (default %(default)s; with --resume: "
                   "train on to this step)")
    p.add_argument("--time-budget", type=duration, metavar="DURATION",
                   help="instead of --steps: train as many steps as fit in DURATION (30m, "
                   "90s, 1h30m, 45 = seconds), counted from a probe of the first steps' "
                   "speed; the count is saved in the checkpoint and --steps N reproduces the "
                   "run exactly")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=positive_float, default=DEFAULTS.lr)
    p.add_argument("--lr-schedule", choices=LrSchedule.values(),
                   default=DEFAULTS.lr_schedule.value)
    p.add_argument("--warmup-steps", type=non_negative_int, default=DEFAULTS.warmup_steps)
    p.add_argument("--weight-decay", type=non_negative_float, default=DEFAULTS.weight_decay)
    p.add_argument("--grad-clip", type=non_negative_float, default=DEFAULTS.grad_clip,
                   help="max gradient norm; 0 disables clipping")
    p.add_argument("--ema-power", type=positive_float, default=DEFAULTS.ema_power,
                   help="EMA warm-up power (2/3 short runs, 3/4 long runs)")
    p.add_argument("--prediction-type", choices=PredictionType.values(),
                   default=DEFAULTS.prediction_type.value)
    p.add_argument("--loss-weighting", choices=LossWeighting.values(),
                   default=DEFAULTS.loss_weighting.value)
    p.add_argument("--snr-gamma", type=positive_float, default=DEFAULTS.snr_gamma)
    p.add_argument("--variance-type", choices=VarianceType.values(),
                   default=DEFAULTS.variance_type.value,
                   help="learned_range: learn the reverse variance with the hybrid loss "
                   "(improved DDPM); sampling with DDPM then uses it (fixed_small / "
                   "fixed_large: DDPM samples with beta tilde / beta; default %(default)s)")
    p.add_argument("--vlb-weight", type=non_negative_float, default=DEFAULTS.vlb_weight,
                   help="lambda of the hybrid loss L_simple + lambda L_vlb (default %(default)s)")
    p.add_argument("--timestep-sampler", choices=TimestepSampler.values(),
                   default=DEFAULTS.timestep_sampler.value,
                   help="importance sampling of t by the loss history (default %(default)s)")
    p.add_argument("--beta-schedule", default=DEFAULTS.beta_schedule.value,
                   choices=BetaSchedule.values())
    p.add_argument("--class-conditional", action=argparse.BooleanOptionalAction,
                   default=DEFAULTS.class_conditional,
                   help="condition on digit labels, dropped at --label-dropout for "
                   "classifier-free guidance (default: on)")
    p.add_argument("--label-dropout", type=finite_float, default=DEFAULTS.label_dropout)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--checkpoint-every", type=positive_int, default=DEFAULTS.checkpoint_every)
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="also keep DIR/ckpt-STEP.npz at every checkpoint")
    p.add_argument("--data-dir", type=Path, help="folder with the four MNIST IDX files")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/ckpt.npz to --steps; the recipe options must match "
                   "the checkpoint's (--checkpoint-every, --keep-checkpoints, --data-dir, "
                   "--device, --threads apply)")
    p.add_argument("--sample-n", type=non_negative_int, default=64,
                   help="samples in the final grid, DIR/samples.png (0: none)")
    p.add_argument("--threads", type=thread_count, help="CPU threads (default: all)")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", type=positive_int, metavar="N",
                   help="profile N steps (after one warm-up step), print the time per op "
                   "and per module, and exit without saving")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="stop at the first op whose gradient is NaN or infinite, naming it "
                   "(autograd.detect_anomaly(); slow)")
    p.set_defaults(run=run_train)


def add_sampler_arguments(p: argparse.ArgumentParser, default_steps: int) -> None:
    """--sampler (its choices: the sampler registry), --steps and the samplers' main options."""
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim",
                   help="sampler (default %(default)s); dpmsolver++ / unipc are good at 10-20 "
                   "steps, heun costs 2 model calls a step")
    p.add_argument("--steps", type=positive_int, default=default_steps,
                   help="inference steps (default %(default)s)")
    p.add_argument("--eta", type=float, help="ddim: noise (0, the default: deterministic)")
    p.add_argument("--solver-order", type=int, choices=[1, 2, 3],
                   help="dpmsolver++ / unipc: solver order (default 2)")
    p.add_argument("--karras", action="store_true",
                   help="dpmsolver++ / unipc / euler / heun: Karras et al. sigmas")
    p.add_argument("--spacing", choices=TimestepSpacing.values(),
                   help="timestep spacing (default: the sampler's, as in diffusers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def sampler_options(sampler: str, eta: float | None = None, solver_order: int | None = None,
                    karras: bool = False, spacing: str | None = None,
                    latent: bool = False) -> dict:
    """The sampler options of the command line's flags; those left unset keep the sampler's
    defaults. Pixel-space models clip x0 to [-1, 1] (clip_sample; thresholding, which is
    clipping at sample_max_value 1, for dpmsolver++ / unipc) where the sampler can; latents
    are never clipped. A flag the sampler does not take is an error naming it."""
    allowed = SAMPLER_CLASSES[sampler].option_names()
    options: dict = {}
    for flag, option, value in (("--eta", "eta", eta),
                                ("--solver-order", "solver_order", solver_order),
                                ("--karras", "use_karras_sigmas", karras or None),
                                ("--spacing", "timestep_spacing", spacing)):
        if value is None:
            continue
        if option not in allowed:
            users = [name for name, cls in SAMPLER_CLASSES.items() if option in cls.option_names()]
            raise ValueError(f"{flag} is an option of {', '.join(users)}, not of {sampler}")
        options[option] = value
    if "clip_sample" in allowed:
        options["clip_sample"] = not latent
    elif "thresholding" in allowed and not latent:
        options["thresholding"] = True
    return options


def add_sample_parser(commands) -> None:
    p = commands.add_parser("sample", help="sample images from a checkpoint",
                            description="Sample from a checkpoint's EMA weights.")
    p.add_argument("--ckpt", required=True, type=Path)
    add_sampler_arguments(p, 50)
    p.add_argument("--n", type=positive_int, default=64, help="number of samples")
    p.add_argument("--class", dest="class_label", type=int,
                   help="digit to generate (class-conditional checkpoints)")
    p.add_argument("--guidance", type=finite_float, help=GUIDANCE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG grid")
    p.add_argument("--npz", type=Path, help="also save the raw samples here")
    p.add_argument("--trajectory", type=Path, help="also save the refinement figure here")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--threads", type=thread_count)
    add_device_argument(p)
    p.set_defaults(run=run_sample)


def add_eval_parser(commands) -> None:
    p = commands.add_parser("eval", help="score samples: MNIST-FID, confidence, NLL",
                            description="Sample from a checkpoint (or read --samples) and "
                            "report MNIST-FID, classifier confidence, the class histogram "
                            "and optionally the test NLL in bits/dim.")
    p.add_argument("--ckpt", type=Path, help="checkpoint to sample from")
    p.add_argument("--samples", type=Path, help="a .npz of samples (from `sample --npz`)")
    p.add_argument("--n", type=positive_int, default=2000, help="samples to draw")
    add_sampler_arguments(p, 50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=finite_float,
                   help=GUIDANCE_HELP + "; the samples cycle through the digits")
    p.add_argument("--no-ema", action="store_true", help="sample from the raw weights")
    p.add_argument("--nll-images", type=non_negative_int, default=0,
                   help="test images for the NLL bound (each costs T model calls; 0 skips)")
    p.add_argument("--threads", type=thread_count)
    add_device_argument(p)
    p.set_defaults(run=run_eval)


def add_plot_schedule_parser(commands) -> None:
    p = commands.add_parser("plot-schedule", help="plot noise schedules",
                            description="Plot sqrt(alphas_cumprod) and "
                            "sqrt(1 - alphas_cumprod).")
    p.add_argument("--schedules", nargs="+",
                   default=[BetaSchedule.LINEAR.value, BetaSchedule.SQUAREDCOS_CAP_V2.value],
                   choices=BetaSchedule.values())
    p.add_argument("--timesteps", type=positive_int, default=1000)
    p.add_argument("--out", type=Path, default=Path("schedules.png"))
    p.set_defaults(run=run_plot_schedule)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinydiff", description="Train and sample tiny DDPM diffusion models on the CPU "
        "(or a GPU).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(commands)
    add_sample_parser(commands)
    add_eval_parser(commands)
    add_plot_schedule_parser(commands)
    return parser


# ---- commands -----------------------------------------------------------------------------


def check_resume(args: argparse.Namespace, settings: dict, checkpoint: Path) -> dict:
    """The TrainConfig overrides a resumed run applies (steps, and the options of
    cli_checks.RESUME_APPLIES given), after checking the checkpoint (finite weights) and that
    every other given recipe option matches it (UsageError naming each that differs)."""
    from tinydiff.cli_checks import RESUME_APPLIES
    from tinydiff.training import WEIGHT_ENTRIES, read_checkpoint, require_finite

    state = read_checkpoint(checkpoint)
    require_finite(state, checkpoint, WEIGHT_ENTRIES)
    if args.vae is not None:
        raise UsageError("--vae: a resumed latent run keeps the VAE stored beside its "
                         "checkpoint (latent.npz); drop --vae")
    given = {"model" if name == "preset" else name for name in args.given_options}
    conflicts = resume_conflicts({name: value for name, value in settings.items()
                                  if name in given}, state["train_config"])
    if conflicts:
        raise UsageError("--resume continues the checkpoint's recipe, and these options "
                         "differ from it: " + "; ".join(conflicts) + ". Drop them, or start "
                         "a new run with another --out")
    if args.steps <= int(state["step"]):
        raise UsageError(f"--steps {args.steps}: {checkpoint} is already at step "
                         f"{state['step']}; pass a larger --steps to train further")
    return {name: settings[name] for name in RESUME_APPLIES if name in given or name == "steps"}


def profile_steps(trainer, steps: int) -> str:
    """The profiler's tables for `steps` training steps after one warm-up step."""
    import autograd

    trainer.train_step()
    with autograd.profiler.profile() as prof:
        for _ in range(steps):
            trainer.train_step()
        trainer.read_losses()  # waits for the device
    return f"{steps} training steps:\n" + prof.table(sort_by="total", row_limit=20)


def check_time_budget(args: argparse.Namespace) -> None:
    """UsageError if --time-budget is given with an option it cannot go with."""
    if args.time_budget is None:
        return
    if "steps" in args.given_options:
        raise UsageError("--time-budget chooses the number of steps and --steps fixes it: "
                         "pick one")
    if args.resume:
        raise UsageError("--time-budget sizes a new run; --resume continues a run to "
                         "--steps N: pick one")
    if args.profile:
        raise UsageError("--profile times N steps and exits, --time-budget trains: pick one")


def run_train(args: argparse.Namespace) -> int:
    from tinydiff.time_budget import format_duration, steps_for_budget
    from tinydiff.training import Trainer

    check_time_budget(args)
    check_output_folder(args.out, "--out")
    if args.data_dir is not None:
        check_input_folder(args.data_dir, "--data-dir")
    names = {f.name for f in fields(TrainConfig)}
    settings = {key: value for key, value in vars(args).items() if key in names}
    settings["model"] = args.preset or ("latent-tiny" if args.vae else DEFAULTS.model)
    settings["data_dir"] = str(args.data_dir) if args.data_dir else None
    checkpoint = args.out / "ckpt.npz"
    overrides = check_resume(args, settings, checkpoint) if args.resume else {}
    latent = args.vae is not None or (args.resume and sidecar_path(checkpoint).exists())
    budget, estimate = args.time_budget, None
    images = labels = None
    if latent or budget is not None:  # read once (the latent trainers encode them)
        from tinydiff.data import load_mnist

        images, labels = load_mnist("train", data_dir=args.data_dir)
    if args.resume:
        if latent:
            trainer = resume_latent_trainer(checkpoint, images, labels, device=args.device,
                                            **overrides)
        else:
            trainer = Trainer.resume(checkpoint, device=args.device, **overrides)
        print(f"resuming {checkpoint} at step {trainer.step} of {args.steps}")
    else:
        if checkpoint.exists():
            raise PathError(f"{checkpoint} exists; pass --resume to continue it or choose "
                            "another --out")
        config = TrainConfig(**settings)
        if latent:
            from tinydiff.latent import scaled_latents
            from tinydiff.vae import load_vae

            vae = load_vae(args.vae)
            encoded = scaled_latents(vae.to(args.device), images)

            def make_trainer(config: TrainConfig) -> Trainer:
                return latent_trainer(vae, images, labels, config, args.out,
                                      device=args.device, encoded=encoded)
        else:
            def make_trainer(config: TrainConfig) -> Trainer:
                return Trainer(config, images, labels, device=args.device)
        if budget is not None:  # the probe trains as the run will (under --detect-anomaly)
            with anomaly_mode(args.detect_anomaly):
                estimate = steps_for_budget(config, budget, make_trainer=make_trainer)
            print(estimate.summary())
            config = estimate.train_config(config)
        trainer = make_trainer(config)
        if estimate is not None:
            trainer.time_budget = estimate.to_dict()
    from tinydiff.models import count_parameters

    print(f"model {trainer.config.model}: {count_parameters(trainer.model):,} parameters; "
          f"{trainer.config.steps} steps of batch {trainer.config.batch_size} on "
          f"{trainer.device}")
    if args.profile:
        print(profile_steps(trainer, args.profile))
        return 0
    with anomaly_mode(args.detect_anomaly):
        trainer.train(args.out, progress=not args.no_progress)
    if estimate is not None:
        spent = estimate.probe_seconds + trainer.train_seconds
        print(f"trained {trainer.step} steps in {format_duration(trainer.train_seconds)} "
              f"(estimate {format_duration(estimate.estimate_seconds)}; with the probe "
              f"{format_duration(spent)} of the {format_duration(budget)} budget); "
              f"--steps {trainer.step} with the same other options reproduces this run")
    print(f"saved {checkpoint} (step {trainer.saved_step})")
    if args.sample_n:
        grid = args.out / "samples.png"
        sample_to_files(checkpoint, n=args.sample_n, out=grid, device=args.device)
        print(f"saved {grid}" + (f" (digits 0-9 in turn, guidance {DEFAULT_GUIDANCE:g})"
                                 if trainer.config.class_conditional else ""))
    return 0


def anomaly_mode(enabled: bool):
    """autograd.detect_anomaly() if `enabled` (--detect-anomaly), else a no-op context."""
    import autograd

    return autograd.detect_anomaly() if enabled else contextlib.nullcontext()


def sample_to_files(ckpt: Path, n: int, out: Path, sampler: str = "ddim", steps: int = 50,
                    eta: float | None = None, class_label: int | None = None,
                    guidance: float | None = None, seed: int = 0, npz: Path | None = None,
                    trajectory: Path | None = None, use_ema: bool = True,
                    batch_size: int = 256, device: str = "cpu",
                    solver_order: int | None = None, karras: bool = False,
                    spacing: str | None = None,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample `n` images from a checkpoint on `device` and write the PNG grid (and .npz,
    trajectory). Returns the images and, for a class-conditional model, the labels they
    were asked for (`class_label`, or the digits in turn), sampled with `guidance` (default
    DEFAULT_GUIDANCE). `sampler` with its options (see `sampler_options`) is built once;
    `progress`: a bar over the model calls of all batches."""
    import autograd
    from autograd.files import atomic_write
    from autograd.nn.parallel import sliced_forward
    from tinydiff.plots import plot_trajectory, save_image_grid
    from tinydiff.samplers import class_guidance, make_sampler, sample
    from tinydiff.training import checkpoint_variance_type, load_for_sampling

    model, schedule, prediction_type, state = load_for_sampling(ckpt, use_ema=use_ema,
                                                                device=device)
    pipeline = None
    if sidecar_path(ckpt).exists():  # latent diffusion: samples are decoded by its VAE
        vae, scale_factor = read_sidecar(ckpt)
        pipeline = LatentPipeline(model, schedule, prediction_type, vae.to(device),
                                  scale_factor)
        if trajectory is not None:
            raise ValueError("--trajectory draws pixel-space runs only; this is a latent run")
    forward = sliced_forward(model)  # on the CPU the batch in slices, one per thread
    conditional = model.config.num_classes is not None
    if (class_label is not None or guidance is not None) and not conditional:
        raise ValueError(f"{ckpt} holds an unconditional model: --class and --guidance need "
                         "one trained with --class-conditional")
    if class_label is not None and not 0 <= class_label < model.config.num_classes:
        raise ValueError(f"--class must be in [0, {model.config.num_classes}), got {class_label}")
    if conditional and guidance is None:
        guidance = DEFAULT_GUIDANCE
    options = sampler_options(sampler, eta, solver_order, karras, spacing,
                              latent=pipeline is not None)
    variance_type = checkpoint_variance_type(state)
    runner = make_sampler(sampler, schedule, steps, prediction_type=prediction_type,
                          **({"variance_type": variance_type}
                             if sampler == "ddpm" or variance_type == "learned_range" else {}),
                          **options)
    generator = np.random.default_rng(seed)
    size, channels = model.config.image_size, model.config.in_channels
    batches, trajectories = [], None
    labels = None
    if conditional:
        labels = (np.full(n, class_label) if class_label is not None
                  else np.arange(n) % model.config.num_classes).astype(np.int64)
    from tqdm.auto import tqdm

    starts = range(0, n, batch_size)
    bar = tqdm(total=len(starts) * runner.model_calls, disable=not progress, unit="call",
               desc=f"{sampler} {steps}", dynamic_ncols=True)
    with bar:
        for start in starts:
            count = min(batch_size, n - start)
            part = None if labels is None else labels[start:start + count]
            with autograd.no_grad():
                result = sample(forward, schedule, (count, channels, size, size),
                                device=device, sampler=runner, generator=generator,
                                return_trajectory=trajectory is not None and start == 0,
                                progress=bar if progress else False,
                                **class_guidance(model, part, guidance))
            if isinstance(result, tuple):
                result, trajectories = result
            batches.append(result if pipeline is None else decode_latents(pipeline, result))
            bar.set_postfix(images=f"{start + count}/{n}")
    images = np.concatenate(batches)
    save_image_grid(images, out)
    if npz is not None:
        with atomic_write(npz) as file:
            np.savez(file, samples=images, **({} if labels is None else {"labels": labels}))
    if trajectory is not None and trajectories is not None:
        plot_trajectory(trajectories.timesteps, trajectories.samples,
                        trajectories.pred_original_samples, trajectory)
    return images, labels


def check_image_output(path: Path, option: str) -> None:
    """`path` can be written, as an image of a type its extension names."""
    from tinydiff.plots import image_format

    check_output_file(path, option)
    try:
        image_format(path)
    except ValueError as error:
        raise PathError(f"{option} {error}") from None


def check_sample_outputs(ckpt: Path, images: dict[str, Path | None],
                         files: dict[str, Path | None]) -> None:
    """Before sampling from `ckpt`: each output (`images`: image files, `files`: others) can
    be written and none is an input (the checkpoint, its latent.npz) or another output."""
    sidecar = sidecar_path(ckpt)
    check_distinct({"--ckpt": ckpt, "its": sidecar if sidecar.exists() else None},
                   {**images, **files})
    for option, path in images.items():
        if path is not None:
            check_image_output(path, option)
    for option, path in files.items():
        if path is not None:
            check_output_file(path, option)


def sampler_flags(args: argparse.Namespace) -> dict:
    """sample_to_files' sampler arguments from the parsed command line."""
    return {"sampler": args.sampler, "steps": args.steps, "eta": args.eta,
            "solver_order": args.solver_order, "karras": args.karras, "spacing": args.spacing,
            "progress": not args.no_progress}


def run_sample(args: argparse.Namespace) -> int:
    check_sample_outputs(args.ckpt, {"--out": args.out, "--trajectory": args.trajectory},
                         {"--npz": args.npz})
    sample_to_files(args.ckpt, n=args.n, out=args.out, class_label=args.class_label,
                    guidance=args.guidance, seed=args.seed, npz=args.npz,
                    trajectory=args.trajectory, use_ema=not args.no_ema,
                    batch_size=args.batch_size, device=args.device, **sampler_flags(args))
    print(f"saved {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from tinydiff.eval import evaluate_samples, nll_bits_per_dim

    if (args.ckpt is None) == (args.samples is None):
        raise ValueError("eval needs exactly one of --ckpt (sample from it) or --samples")
    if args.nll_images and args.ckpt is None:
        raise UsageError("--nll-images needs --ckpt")
    if args.samples is not None:
        samples, labels = read_samples(args.samples)
    else:
        grid = args.ckpt.parent / f"eval-{args.sampler}{args.steps}-samples.png"
        check_sample_outputs(args.ckpt, {"the sample grid": grid}, {})
        samples, labels = sample_to_files(args.ckpt, n=args.n, out=grid, seed=args.seed,
                                          guidance=args.guidance, use_ema=not args.no_ema,
                                          device=args.device, **sampler_flags(args))
    for line in evaluate_samples(samples, seed=args.seed, labels=labels).lines():
        print(line)
    if args.nll_images:
        if sidecar_path(args.ckpt).exists():
            raise ValueError("--nll-images: the bound in bits/dim is of pixel-space models; "
                             f"{args.ckpt} is a latent diffusion run")
        from autograd.nn.parallel import sliced_forward
        from tinydiff.data import load_mnist
        from tinydiff.training import checkpoint_variance_type, load_for_sampling

        model, schedule, prediction_type, state = load_for_sampling(
            args.ckpt, use_ema=not args.no_ema, device=args.device)
        images = load_mnist("test")[0][: args.nll_images]
        mean, error = nll_bits_per_dim(sliced_forward(model), schedule, images,
                                       prediction_type, seed=args.seed,
                                       variance_type=checkpoint_variance_type(state),
                                       device=args.device, progress=not args.no_progress)
        print(f"NLL bound: {mean:.3f} +- {error:.3f} bits/dim ({len(images)} test images)")
    return 0


def read_samples(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(samples, labels or None) from a .npz written by `sample --npz`."""
    import zipfile

    if not path.is_file():
        raise PathError(f"--samples {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, AttributeError) as error:
        raise PathError(f"--samples {path} is not a readable .npz (truncated, corrupt or "
                        f"pickled?): {error}") from None
    if "samples" not in arrays:
        raise PathError(f"--samples {path} has no 'samples' array (it has "
                        f"{', '.join(arrays) or 'none'}); expected a .npz from "
                        "`tinydiff sample --npz`")
    samples, labels = arrays["samples"], arrays.get("labels")
    if samples.ndim != 4 or not np.all(np.isfinite(samples)):
        raise PathError(f"--samples {path}: expected finite images (N, C, H, W), got an "
                        f"array of shape {samples.shape}" + ("" if samples.ndim != 4 else
                                                             " holding NaN or inf"))
    return samples, labels


def run_plot_schedule(args: argparse.Namespace) -> int:
    from tinydiff.plots import plot_schedules
    from tinydiff.schedules import NoiseSchedule

    check_image_output(args.out, "--out")

    schedules = {name: NoiseSchedule(args.timesteps, beta_schedule=name)
                 for name in args.schedules}
    print(f"saved {plot_schedules(schedules, args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.given_options = given_destinations(
        parser, sys.argv[1:] if argv is None else argv, args.command)
    if getattr(args, "threads", None):
        import autograd

        autograd.set_num_threads(args.threads)
    from tinydiff.data import MNISTError
    from tinydiff.interrupts import TrainingInterrupted
    from tinydiff.training import NonFiniteLossError

    # what a user can cause: a message and exit status 2 (usage) or 1; anything else is a
    # bug and keeps its traceback
    try:
        return args.run(args)
    except UsageError as error:
        print(f"tinydiff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            ValueError, MNISTError, NonFiniteLossError) as error:
        print(f"tinydiff {args.command}: error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stopped:
        print(f"tinydiff {args.command}: {stopped}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"tinydiff {args.command}: interrupted", file=sys.stderr)
        return 130
