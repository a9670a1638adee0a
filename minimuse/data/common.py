"""What every dataset shares: the splits, the pixel range, resizing, even subsets, and where downloads go.

Every dataset yields `(image, label)` with `image` a float32 tensor `(3, R, R)` in [-1, 1] and `label` an int,
and has `class_names: list[str]` (empty for an unlabelled image folder, whose labels are all 0).
"""
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SPLITS = ("train", "holdout")
DATASET_NAMES = ("shapes", "mnist", "fashion-mnist", "cifar10")


def cache_dir() -> Path:
    """Where downloads go: $MINIMUSE_CACHE, else ~/.cache/minimuse."""
    return Path(os.environ.get("MINIMUSE_CACHE", "~/.cache/minimuse")).expanduser()


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels (H, W, 3) or (H, W) -> float32 tensor (3, H, W) in [-1, 1]."""
    x = pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)  # numpy: cheaper than torch ops here
    x = np.broadcast_to(x, (3, *x.shape)) if x.ndim == 2 else x.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(x))


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(3, h, w) in [-1, 1] -> (3, R, R), antialiased bicubic; a no-op when the size already matches."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    x = F.interpolate(x[None], size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    return x[0].clamp_(-1.0, 1.0)


def evenly_spaced(n: int, size: int | None) -> np.ndarray:
    """Indices of `size` items spread evenly over `n`, all n when size is None or at least n: a deterministic
    subset that keeps every class of a class-sorted dataset. (`build_dataset` says when a split held fewer.)"""
    if size is None or size >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, size).round().astype(np.int64)


