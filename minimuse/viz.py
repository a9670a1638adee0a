"""Pictures: image grids, decoding filmstrips, loss curves. Everything a person looks at is saved as PNG."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from PIL import Image  # noqa: E402


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "b c h w -> b h w c").numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad, 3) uint8 picture, filled row by row."""
    b, _, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(to_uint8(images)):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> None:
    """Save a grid of images as a PNG, upscaled by `scale` with nearest neighbour so small images stay crisp."""
    grid = Image.fromarray(make_grid(images, nrow))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """One (3, H, W) image in [-1, 1] -> PNG."""
    Image.fromarray(to_uint8(image[None])[0]).save(path)


def save_filmstrip(frames: list[torch.Tensor], path: str | Path, scale: int = 2) -> None:
    """Decoding process: frames[t] is (B, 3, H, W), the canvas after step t; one row per image, one column per step."""
    stack = torch.stack(frames, dim=1)                                # (B, T, 3, H, W)
    save_grid(rearrange(stack, "b t c h w -> (b t) c h w"), path, nrow=len(frames), scale=scale)


def plot_log(csv_path: str | Path, png_path: str | Path, columns: tuple[str, ...] | None = None) -> None:
    """Plot every numeric column of a training CSV log against `step`, one panel per column."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    names = [c for c in (columns or rows[0].keys()) if c != "step" and rows[0].get(c, "") != ""]
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        ys = [float(r[name]) if r[name] != "" else float("nan") for r in rows]
        ax.plot(steps, ys, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if name.startswith("loss") and min(y for y in ys if y == y) > 0:
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
