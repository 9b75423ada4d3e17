"""The UNet layer by layer: the shape after every block of mnist-tiny.

    python examples/unet_shapes.py [--preset mnist-tiny]

Follows one image down (28 -> 14 -> 7), through the middle, and back up, printing the
shape each block hands on (from forward hooks on the blocks), then the parameters of each
part of the model.
"""

from __future__ import annotations

import argparse

import numpy as np

import autograd
from autograd import nn
from tinydiff.models import Downsample, ResBlock, Upsample, build_model, count_parameters

BLOCKS = (ResBlock, nn.SelfAttention2d, nn.CrossAttention2d, Downsample, Upsample)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist-tiny")
    args = parser.parse_args(argv)
    model = build_model(args.preset).eval()
    size = model.config.image_size
    x = np.zeros((1, model.config.in_channels, size, size), np.float32)
    print(f"{'block':<28}{'module':<18}output shape")

    def show(module, args, output) -> None:
        print(f"{names[module]:<28}{type(module).__name__:<18}{output.shape}")

    names = {module: name for name, module in model.named_modules()
             if isinstance(module, BLOCKS) or name in ("time_mlp", "conv_in", "conv_out")}
    handles = [module.register_forward_hook(show) for module in names if module is not model]
    with autograd.no_grad():
        model(x, np.array([500]))
    for handle in handles:
        handle.remove()
    print(f"\n{'part':<24}{'parameters':>12}")
    for name, part in model.named_children():
        print(f"{name:<24}{count_parameters(part):>12,}")
    print(f"total parameters: {count_parameters(model):,}")


if __name__ == "__main__":
    main()
