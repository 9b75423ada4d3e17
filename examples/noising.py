"""Adding noise: the forward process q(x_t | x_0) on MNIST digits at several t.

    python examples/noising.py [--out noising.png]

Each row is one digit; columns are x_t = sqrt_alphas_cumprod_t x_0 +
sqrt_one_minus_alphas_cumprod_t eps for growing t under the linear schedule. By t = 999
almost nothing of the digit is left.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinydiff.data import load_mnist
from tinydiff.diffusion import q_sample
from tinydiff.plots import save_image_grid
from tinydiff.schedules import NoiseSchedule


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("noising.png"))
    args = parser.parse_args(argv)
    schedule = NoiseSchedule(1000, beta_schedule="linear")
    images, _ = load_mnist("test", limit=4)
    timesteps = [0, 50, 100, 200, 300, 500, 700, 999]
    generator = np.random.default_rng(0)
    columns = []
    for t in timesteps:
        noise = generator.standard_normal(images.shape).astype(np.float32)
        columns.append(q_sample(schedule, images, np.full(len(images), t), noise))
        print(f"t={t:4d}  sqrt_alphas_cumprod={schedule.sqrt_alphas_cumprod[t]:.3f}  "
              f"sqrt_one_minus_alphas_cumprod="
              f"{schedule.sqrt_one_minus_alphas_cumprod[t]:.3f}")
    grid = np.stack(columns, axis=1).reshape(-1, *images.shape[1:])  # rows: digits
    path = save_image_grid(grid, args.out, nrow=len(timesteps))
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
