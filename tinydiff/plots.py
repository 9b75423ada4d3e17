"""Plots for tinydiff, drawn off-screen with matplotlib's Agg canvas and saved to a file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autograd.files import atomic_write
from tinydiff.schedules import NoiseSchedule

# what both figures (savefig) and image grids (imsave, through Pillow) can be written as
IMAGE_FORMATS = ("eps", "gif", "jpeg", "jpg", "pdf", "png", "ps", "svg", "tif", "tiff", "webp")


def image_format(path: str | Path) -> str:
    """The image format `path`'s extension names ("png", "pdf", ...); ValueError when it is
    not one of IMAGE_FORMATS."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{path}: cannot write an image of type "
                         f"{suffix or '(no extension)'!r}; use one of "
                         f"{', '.join('.' + name for name in IMAGE_FORMATS)}")
    return "tiff" if suffix == "tif" else suffix


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    kind = image_format(path)
    FigureCanvasAgg(figure)
    with atomic_write(path) as file:
        figure.savefig(file, format=kind)
    return path


def plot_schedules(
    schedules: NoiseSchedule | Mapping[str, NoiseSchedule], path: str | Path
) -> Path:
    """Plot sqrt_alphas_cumprod (signal) and sqrt_one_minus_alphas_cumprod (noise) against
    t / T.

    `schedules` is one schedule or a {label: schedule} mapping; t is normalised by T so schedules
    of different lengths share the axis. Returns the saved path.
    """
    if isinstance(schedules, NoiseSchedule):
        schedules = {str(schedules.beta_schedule): schedules}
    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule")
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    signal_axes, noise_axes = figure.subplots(1, 2, sharey=True)
    for label, schedule in schedules.items():
        t = np.arange(schedule.num_train_timesteps) / schedule.num_train_timesteps
        signal_axes.plot(t, schedule.sqrt_alphas_cumprod, label=label)
        noise_axes.plot(t, schedule.sqrt_one_minus_alphas_cumprod, label=label)
    signal_axes.set_title(r"signal $\sqrt{\bar\alpha_t}$")
    noise_axes.set_title(r"noise $\sqrt{1-\bar\alpha_t}$")
    for axes in (signal_axes, noise_axes):
        axes.set_xlabel("t / T")
        axes.grid(alpha=0.3)
    signal_axes.legend()
    return _save(figure, path)


def plot_loss_curve(history: Mapping[str, list[float]], path: str | Path) -> Path:
    """Training loss per step (faint) and its moving average, on a log scale."""
    steps = np.asarray(history["step"])
    losses = np.asarray(history["loss"])
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.subplots()
    if losses.size:
        axes.plot(steps, losses, alpha=0.3, linewidth=0.8, label="loss")
        window = min(100, losses.size)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1:], smooth, label=f"mean of {window}")
        axes.set_yscale("log")
        axes.legend()
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def image_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (rows*H, cols*W) or (.., .., C) array in
    [0, 1], `nrow` images per row (default: a near-square grid)."""
    images = np.clip((np.asarray(images, dtype=np.float32) + 1) / 2, 0, 1)
    count, channels, height, width = images.shape
    columns = nrow or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    grid = np.ones((channels, rows * (height + padding) + padding,
                    columns * (width + padding) + padding), dtype=np.float32)
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[:, top:top + height, left:left + width] = image
    return grid[0] if channels == 1 else grid.transpose(1, 2, 0)


def save_image_grid(images: np.ndarray, path: str | Path, nrow: int | None = None,
                    scale: int = 3) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid, each pixel `scale` x `scale`."""
    import matplotlib.image

    grid = image_grid(images, nrow)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    path = Path(path)
    kind = image_format(path)
    with atomic_write(path) as file:
        matplotlib.image.imsave(file, grid, cmap="gray", vmin=0.0, vmax=1.0,
                                format=kind)
    return path


def plot_trajectory(timesteps: np.ndarray, samples: np.ndarray, predicted_x0: np.ndarray,
                    path: str | Path, count: int = 4) -> Path:
    """The iterative-refinement figure: for `count` samples, x_t (top rows) beside the
    predicted x0 (bottom rows) at each recorded timestep. samples, predicted_x0:
    (steps, N, C, H, W)."""
    steps = len(timesteps)
    count = min(count, samples.shape[1])
    figure = Figure(figsize=(1.1 * steps, 2.3 * count), layout="constrained")
    axes = figure.subplots(2 * count, steps, squeeze=False)
    for column, t in enumerate(timesteps):
        for row in range(count):
            for offset, images, label in ((0, samples, "x_t"), (1, predicted_x0, "x0")):
                ax = axes[2 * row + offset, column]
                ax.imshow(np.clip((images[column, row, 0] + 1) / 2, 0, 1), cmap="gray",
                          vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if column == 0:
                    ax.set_ylabel(label)
        axes[0, column].set_title(f"t={int(t)}", fontsize=8)
    return _save(figure, path)


def plot_labelled_rows(rows: Mapping[str, np.ndarray], path: str | Path,
                       title: str | None = None) -> Path:
    """One labelled row of images per entry: {label: (N, C, H, W) in [-1, 1]}, each row
    tiled side by side (for comparisons: samplers, guidance scales)."""
    if not rows:
        raise ValueError("plot_labelled_rows needs at least one row")
    tiles = [image_grid(images, nrow=len(images)) for images in rows.values()]
    width = max(tile.shape[1] for tile in tiles)
    figure = Figure(figsize=(width / 40 + 1.5, 0.75 * len(tiles) + 0.4),
                    layout="constrained")
    for axes, label, tile in zip(np.atleast_1d(figure.subplots(len(tiles), 1)), rows, tiles):
        axes.imshow(tile, cmap="gray", vmin=0, vmax=1)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)
