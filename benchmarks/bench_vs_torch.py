"""tinydiff against PyTorch eager on the CPU: the same mnist-tiny UNet, batch and threads.

    PYTHONPATH=. /path/to/torch-env/bin/python benchmarks/bench_vs_torch.py
        [--threads 2] [--rounds 5] [--skip-layers] [--gap 0.5]

PyTorch is for this benchmark only (never a dependency of the package, its extras or its
tests): install it in a separate environment by hand, with this project's run-time
dependencies beside it:

    python -m venv /tmp/torch-env
    /tmp/torch-env/bin/pip install torch numpy numba matplotlib tqdm threadpoolctl

Without PyTorch the script says so and exits 0.

Both sides get the same weights (copied by parameter name, and checked by comparing one
forward pass), the same data and the same timesteps. Each round times every case once on
each side, the two sides alternating (and which goes first alternating between rounds), so
both see the machine's drift alike; each timed call starts after `--gap` idle seconds, so
that neither side's spinning worker threads (OpenBLAS, OpenMP) slow the other: measured
here, tinydiff's plain loop took 1.50 s right after PyTorch's and 1.41 s a second later.
The table has the medians over the rounds and their ratio (tinydiff / PyTorch: below 1 is
faster).

Cases:
- trainer step: tinydiff's `Trainer.train_step` (the default recipe: class labels, min-SNR-5
  weighting, clipping at 1, AdamW, EMA; its batch slices on worker threads) against the same
  recipe written plainly in PyTorch;
- plain loop: `model(x_t, t)`, mean squared error, backward, AdamW: no slices, no EMA;
- sampling forward: one model call of a DDIM step at batch 256, without guidance, and with
  classifier-free guidance (conditional and null-label halves in one batch of 512); tinydiff
  as its samplers call the model (a slice per thread);
- a per-layer table: every distinct convolution of mnist-tiny at batch 64, forward and
  forward + backward.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from timing import cpu_name

import autograd
from autograd import nn as ad_nn
from autograd import optim as ad_optim
from autograd.nn import functional as ad_F
from autograd.nn.parallel import sliced_forward
from tinydiff.models import UNetConfig, build_model, timestep_embedding
from tinydiff.training import TrainConfig, Trainer, make_schedule

try:
    import torch
    import torch.nn.functional as torch_F
    from torch import nn as torch_nn
except ImportError:  # the module's torch classes below are only defined with torch
    torch = None


def install_hint() -> str:
    return ("PyTorch is not installed in this environment; this benchmark needs it in a "
            "separate one:\n"
            "    python -m venv /tmp/torch-env\n"
            "    /tmp/torch-env/bin/pip install torch numpy numba matplotlib tqdm "
            "threadpoolctl\n"
            "    PYTHONPATH=. /tmp/torch-env/bin/python benchmarks/bench_vs_torch.py")


# ---- the same UNet in PyTorch (parameter names as tinydiff's, so weights copy by name) ----

if torch is not None:

    class TorchResBlock(torch_nn.Module):
        def __init__(self, cin: int, cout: int, embed_dim: int, groups: int) -> None:
            super().__init__()
            self.norm1 = torch_nn.GroupNorm(groups, cin)
            self.conv1 = torch_nn.Conv2d(cin, cout, 3, padding=1)
            self.embed_proj = torch_nn.Linear(embed_dim, cout)
            self.norm2 = torch_nn.GroupNorm(groups, cout)
            self.conv2 = torch_nn.Conv2d(cout, cout, 3, padding=1)
            self.shortcut = (torch_nn.Conv2d(cin, cout, 1) if cin != cout
                             else torch_nn.Identity())

        def forward(self, x, embedding):
            h = self.conv1(torch_F.silu(self.norm1(x)))
            h = h + self.embed_proj(torch_F.silu(embedding))[:, :, None, None]
            h = self.conv2(torch_F.silu(self.norm2(h)))
            return self.shortcut(x) + h

    class TorchAttention(torch_nn.Module):
        def __init__(self, channels: int, groups: int) -> None:
            super().__init__()
            self.norm = torch_nn.GroupNorm(groups, channels)
            self.qkv = torch_nn.Conv2d(channels, 3 * channels, 1)
            self.proj = torch_nn.Conv2d(channels, channels, 1)

        def forward(self, x):
            n, c, h, w = x.shape
            q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(2, 3).unbind(1)
            attended = torch_F.scaled_dot_product_attention(q, k, v)  # (N, HW, C)
            return x + self.proj(attended.transpose(1, 2).reshape(n, c, h, w))

    class TorchLevel(torch_nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.res_blocks = torch_nn.ModuleList()
            self.attentions = torch_nn.ModuleList()

    class TorchDownsample(torch_nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv = torch_nn.Conv2d(channels, channels, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)

    class TorchUpsample(torch_nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv = torch_nn.Conv2d(channels, channels, 3, padding=1)

        def forward(self, x):
            return self.conv(torch_F.interpolate(x, scale_factor=2, mode="nearest"))

    class TorchUNet(torch_nn.Module):
        """tinydiff.models.UNet for configs with one attention head and no cross-attention."""

        def __init__(self, config: UNetConfig) -> None:
            super().__init__()
            if config.attention_heads != 1 or config.context_dim is not None:
                raise ValueError("the PyTorch twin covers one head, no cross-attention")
            self.config = config
            groups, embed_dim = config.norm_groups, 4 * config.base_channels
            channels = [config.base_channels * m for m in config.channel_mult]
            self.time_mlp = torch_nn.Sequential(torch_nn.Linear(config.time_embed_dim,
                                                                embed_dim),
                                                torch_nn.SiLU(),
                                                torch_nn.Linear(embed_dim, embed_dim))
            if config.num_classes is not None:
                self.class_embedding = torch_nn.Embedding(config.num_classes + 1, embed_dim)
            self.conv_in = torch_nn.Conv2d(config.in_channels, config.base_channels, 3,
                                           padding=1)

            def attention(level: int, c: int):
                return (TorchAttention(c, groups) if level in config.attention_levels
                        else torch_nn.Identity())

            skips, current = [config.base_channels], config.base_channels
            self.down, self.downsamples = torch_nn.ModuleList(), torch_nn.ModuleList()
            for level, c in enumerate(channels):
                blocks = TorchLevel()
                for _ in range(config.num_res_blocks):
                    blocks.res_blocks.append(TorchResBlock(current, c, embed_dim, groups))
                    blocks.attentions.append(attention(level, c))
                    current = c
                    skips.append(c)
                self.down.append(blocks)
                if level < len(channels) - 1:
                    self.downsamples.append(TorchDownsample(c))
                    skips.append(c)
            self.mid_block1 = TorchResBlock(current, current, embed_dim, groups)
            self.mid_attention = TorchAttention(current, groups)
            self.mid_block2 = TorchResBlock(current, current, embed_dim, groups)
            self.up, self.upsamples = torch_nn.ModuleList(), torch_nn.ModuleList()
            for level in reversed(range(len(channels))):
                c = channels[level]
                blocks = TorchLevel()
                for _ in range(config.num_res_blocks + 1):
                    blocks.res_blocks.append(TorchResBlock(current + skips.pop(), c,
                                                           embed_dim, groups))
                    blocks.attentions.append(attention(level, c))
                    current = c
                self.up.append(blocks)
                if level > 0:
                    self.upsamples.append(TorchUpsample(c))
            self.norm_out = torch_nn.GroupNorm(groups, current)
            self.conv_out = torch_nn.Conv2d(current, config.out_channels, 3, padding=1)

        def forward(self, x, t, class_labels=None):
            features = torch.from_numpy(timestep_embedding(t, self.config.time_embed_dim))
            embedding = self.time_mlp(features)
            if self.config.num_classes is not None:
                if class_labels is None:
                    class_labels = np.full(len(t), self.config.num_classes)
                embedding = embedding + self.class_embedding(torch.from_numpy(
                    np.asarray(class_labels, np.int64)))
            h = self.conv_in(x)
            skips = [h]
            for level, blocks in enumerate(self.down):
                for block, attend in zip(blocks.res_blocks, blocks.attentions):
                    h = attend(block(h, embedding))
                    skips.append(h)
                if level < len(self.downsamples):
                    h = self.downsamples[level](h)
                    skips.append(h)
            h = self.mid_block2(self.mid_attention(self.mid_block1(h, embedding)), embedding)
            for index, blocks in enumerate(self.up):
                for block, attend in zip(blocks.res_blocks, blocks.attentions):
                    h = attend(block(torch.cat([h, skips.pop()], dim=1), embedding))
                if index < len(self.upsamples):
                    h = self.upsamples[index](h)
            return self.conv_out(torch_F.silu(self.norm_out(h)))


def torch_twin(model) -> TorchUNet:
    """A PyTorch UNet holding the same weights as the tinydiff `model`."""
    twin = TorchUNet(model.config)
    ours = dict(model.state_dict())
    theirs = twin.state_dict()
    if set(ours) != set(theirs):
        raise RuntimeError(f"parameter names differ: {sorted(set(ours) ^ set(theirs))[:6]}")
    twin.load_state_dict({name: torch.from_numpy(np.array(ours[name])) for name in theirs})
    return twin


# ---- the training recipes in PyTorch ----------------------------------------------------

class TorchTrainer:
    """The default recipe of tinydiff's Trainer written plainly in PyTorch: label dropout,
    min-SNR-5 weighted epsilon loss, clipping, AdamW with warm-up, EMA with warm-up."""

    def __init__(self, model, images, labels, config: TrainConfig, alphas_cumprod) -> None:
        self.model, self.images, self.labels, self.config = model, images, labels, config
        self.alphas_cumprod = alphas_cumprod
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps))
        self.ema = [p.detach().clone() for p in model.parameters()]
        self.rng = np.random.default_rng(0)
        self.step = 0

    def train_step(self) -> None:
        config, rng = self.config, self.rng
        index = rng.integers(0, len(self.images), config.batch_size)
        x0 = torch.from_numpy(self.images[index])
        labels = np.where(rng.random(len(index)) < config.label_dropout, 10, self.labels[index])
        t = rng.integers(0, config.num_train_timesteps, len(index))
        noise = torch.from_numpy(rng.standard_normal(x0.shape, dtype=np.float32))
        alphas_cumprod_t = torch.from_numpy(
            self.alphas_cumprod[t].astype(np.float32))[:, None, None, None]
        x_t = alphas_cumprod_t.sqrt() * x0 + (1 - alphas_cumprod_t).sqrt() * noise
        snr = self.alphas_cumprod[t] / (1 - self.alphas_cumprod[t])
        weights = torch.from_numpy((np.minimum(snr, config.snr_gamma) / snr).astype(np.float32))
        per_sample = ((self.model(x_t, t, labels) - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (weights * per_sample).mean()
        self.optimizer.zero_grad()
        loss.backward()
        torch_nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        decay = min(config.ema_max_decay, 1 - (1 + self.step) ** -config.ema_power)
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, list(self.model.parameters()), 1 - decay)


def ours_plain_step(model, optimizer, x0, t, noise, alphas_cumprod) -> None:
    alphas_cumprod_t = alphas_cumprod[t].astype(np.float32)[:, None, None, None]
    x_t = autograd.tensor(np.sqrt(alphas_cumprod_t) * x0 + np.sqrt(1 - alphas_cumprod_t) * noise)
    loss = ad_F.mse_loss(model(x_t, t), autograd.tensor(noise))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def torch_plain_step(model, optimizer, x0, t, noise, alphas_cumprod) -> None:
    alphas_cumprod_t = alphas_cumprod[t].astype(np.float32)[:, None, None, None]
    x_t = torch.from_numpy(np.sqrt(alphas_cumprod_t) * x0 + np.sqrt(1 - alphas_cumprod_t) * noise)
    loss = torch_F.mse_loss(model(x_t, t), torch.from_numpy(noise))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# ---- timing -------------------------------------------------------------------------------

def alternate(cases: dict[str, tuple[Callable, Callable]], rounds: int,
              gap: float) -> dict[str, tuple]:
    """Median seconds of each case's two sides, timed alternately after one warm-up each.

    Each timed call starts `gap` seconds after the last one ended: the side that ran before
    leaves its worker threads spinning for a while (OpenBLAS's and OpenMP's busy-waits), and
    without the pause they take cycles from whichever side runs next. Which side goes first
    alternates between rounds."""
    times: dict[str, tuple[list, list]] = {name: ([], []) for name in cases}
    for ours, theirs in cases.values():
        ours(), theirs()
    for round_ in range(rounds):
        for name, pair in cases.items():
            for side in (0, 1) if round_ % 2 == 0 else (1, 0):
                time.sleep(gap)
                start = time.perf_counter()
                pair[side]()
                times[name][side].append(time.perf_counter() - start)
    return {name: (statistics.median(a), statistics.median(b)) for name, (a, b) in times.items()}


def print_table(title: str, medians: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}")
    print(f"| {'case':<52} | tinydiff ms | PyTorch ms | ratio |")
    print(f"| {'-' * 52} | ---: | ---: | ---: |")
    for name, (ours, theirs) in medians.items():
        print(f"| {name:<52} | {ours * 1e3:11.1f} | {theirs * 1e3:10.1f} | "
              f"{ours / theirs:5.2f} |")


def conv_shapes(config: UNetConfig) -> list[tuple[int, int, int, int, int]]:
    """Distinct (in_channels, out_channels, kernel, stride, input size) of the UNet's convs."""
    model = build_model(config)
    seen: list[tuple[int, int, int, int, int]] = []

    def record(module, x):
        key = (module.in_channels, module.out_channels, module.kernel_size[0],
               module.stride[0], x.shape[-1])
        if key not in seen:
            seen.append(key)

    handles = [module.register_forward_pre_hook(lambda m, args: record(m, args[0]))
               for module in model.modules() if isinstance(module, ad_nn.Conv2d)]
    with autograd.no_grad():
        model(np.zeros((1, config.in_channels, config.image_size, config.image_size),
                       np.float32), np.zeros(1, np.int64))
    for handle in handles:
        handle.remove()
    return seen


def layer_cases(config: UNetConfig, batch: int, rng) -> dict[str, tuple[Callable, Callable]]:
    cases = {}
    for cin, cout, k, stride, size in conv_shapes(config):
        x = rng.standard_normal((batch, cin, size, size), dtype=np.float32)
        w = rng.standard_normal((cout, cin, k, k), dtype=np.float32) / math.sqrt(cin * k * k)
        b = np.zeros(cout, np.float32)
        padding = k // 2
        label = f"conv {cin}->{cout} {k}x{k}/{stride} @{size}"

        def ours(x=x, w=w, b=b, stride=stride, padding=padding, grad=False):
            xs = [autograd.from_numpy(a).requires_grad_(grad) for a in (x, w, b)]
            y = ad_F.conv2d(*xs, stride=stride, padding=padding)
            if grad:
                y.sum().backward()

        def theirs(x=x, w=w, b=b, stride=stride, padding=padding, grad=False):
            xs = [torch.from_numpy(a).requires_grad_(grad) for a in (x, w, b)]
            y = torch_F.conv2d(*xs, stride=stride, padding=padding)
            if grad:
                y.sum().backward()

        cases[label + " fwd"] = (ours, theirs)
        cases[label + " fwd+bwd"] = (lambda f=ours: f(grad=True), lambda f=theirs: f(grad=True))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--skip-layers", action="store_true", help="no per-layer table")
    parser.add_argument("--sample-batch", type=int, default=256)
    parser.add_argument("--gap", type=float, default=0.5,
                        help="idle seconds before each timed call (0: back to back)")
    args = parser.parse_args()
    if torch is None:
        print(install_hint())
        return 0
    autograd.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; {args.threads} thread(s); torch {torch.__version__}, numpy "
          f"{np.__version__}, python {sys.version.split()[0]}; medians of {args.rounds} rounds, "
          f"{args.gap} s idle before each timed call")

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4096, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, len(images))
    trainers = {}
    for batch in (32, 64):
        config = TrainConfig(batch_size=batch, steps=10**6)
        ours = Trainer(config, images, labels)
        theirs = TorchTrainer(torch_twin(ours.model), images, labels, config,
                              ours.schedule.alphas_cumprod)
        trainers[f"trainer step, batch {batch}"] = (ours.train_step, theirs.train_step)

    # the weights agree: one forward of the twin against the original
    model = build_model("mnist-tiny")
    twin = torch_twin(model)
    x = rng.standard_normal((4, 1, 28, 28), dtype=np.float32)
    t = np.array([0, 10, 500, 999])
    with autograd.no_grad(), torch.no_grad():
        difference = np.abs(model(x, t).numpy() - twin(torch.from_numpy(x), t).numpy()).max()
    print(f"same network: max |tinydiff - PyTorch| on one forward = {difference:.2e}")

    alphas_cumprod = make_schedule(TrainConfig()).alphas_cumprod
    x0 = images[:64]
    t64 = rng.integers(0, 1000, 64)
    noise = rng.standard_normal(x0.shape, dtype=np.float32)
    plain_ours = build_model("mnist-tiny")
    plain_theirs = torch_twin(plain_ours)
    ours_opt = ad_optim.AdamW(plain_ours.parameters(), lr=1e-4)
    theirs_opt = torch.optim.AdamW(plain_theirs.parameters(), lr=1e-4)
    cases = dict(trainers)
    cases["plain loop (model, mse, backward, AdamW), batch 64"] = (
        lambda: ours_plain_step(plain_ours, ours_opt, x0, t64, noise, alphas_cumprod),
        lambda: torch_plain_step(plain_theirs, theirs_opt, x0, t64, noise, alphas_cumprod))

    conditional = build_model("mnist-tiny", num_classes=10).eval()
    conditional_twin = torch_twin(conditional).eval()
    n = args.sample_batch
    xs = rng.standard_normal((n, 1, 28, 28), dtype=np.float32)
    ts, ys = np.full(n, 500), np.arange(n) % 10
    sliced = sliced_forward(conditional)

    def ours_forward(guided: bool):
        batch = np.concatenate([xs, xs]) if guided else xs
        cond = np.concatenate([ys, np.full(n, 10)]) if guided else ys
        with autograd.no_grad():
            sliced(batch, np.concatenate([ts, ts]) if guided else ts, class_labels=cond)

    def theirs_forward(guided: bool):
        batch = torch.from_numpy(np.concatenate([xs, xs]) if guided else xs)
        cond = np.concatenate([ys, np.full(n, 10)]) if guided else ys
        with torch.inference_mode():
            conditional_twin(batch, np.concatenate([ts, ts]) if guided else ts, cond)

    cases[f"sampling forward, batch {n}"] = (lambda: ours_forward(False),
                                             lambda: theirs_forward(False))
    cases[f"sampling forward, batch {n}, guided (x2)"] = (lambda: ours_forward(True),
                                                          lambda: theirs_forward(True))
    print_table("The UNet (mnist-tiny)", alternate(cases, args.rounds, args.gap))
    if not args.skip_layers:
        print_table("Each convolution of mnist-tiny, batch 64",
                    alternate(layer_cases(UNetConfig(), 64, rng), args.rounds,
                                        args.gap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
