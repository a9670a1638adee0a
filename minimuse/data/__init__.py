"""Datasets by name: `build_dataset("shapes" | "mnist" | "fashion-mnist" | "cifar10" | PATH, ...)`.

    common.py   what every dataset shares: splits, pixel range, resizing, subsets, the download cache
    shapes.py   procedural Shapes, the default (no download), with captions and exact attributes
    files.py    image folders, MNIST / Fashion-MNIST IDX files, CIFAR-10's python archive
"""
from pathlib import Path

from torch.utils.data import Dataset

from minimuse.data.common import DATASET_NAMES, check_split
from minimuse.data.files import CIFAR10, MNIST, ImageFolder, find_cifar, find_idx
from minimuse.data.shapes import Shapes


def build_dataset(name: str, resolution: int, split: str = "train", *, seed: int = 0, size: int | None = None,
                  root: str | None = None) -> Dataset:
    """Build a dataset by name: shapes | mnist | fashion-mnist | cifar10 | PATH.

    A PATH is a folder holding MNIST-style IDX files (Fashion-MNIST class names when the folder name contains
    "fashion"), CIFAR-10's archive or batches, or else any folder of images. `seed` picks the Shapes images
    (the file datasets are fixed); `size` is the split size for Shapes and keeps an evenly spread subset of
    the others (all of a split that holds fewer, said in one line); `root` is where the files of mnist /
    fashion-mnist / cifar10 live.
    """
    check_split(split)
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    if size is not None and size < 1:
        raise ValueError(f"data.{split}_size must be positive, got {size}; set it with --set data.{split}_size=N")
    dataset = _build(name, resolution, split, seed, size, root)
    if size is not None and len(dataset) < size:
        print(f"data: the {split} split of {name} holds {len(dataset)} images, fewer than data.{split}_size={size}; "
              f"using all of them (--set data.{split}_size=N to choose)")
    return dataset


def _build(name: str, resolution: int, split: str, seed: int, size: int | None, root: str | None) -> Dataset:
    key = name.lower()
    if root is not None and key not in ("mnist", "fashion-mnist", "cifar10"):
        raise ValueError(f"root={root!r} only applies to mnist, fashion-mnist and cifar10, not {name!r}")
    if key == "shapes":
        return Shapes(resolution, split, seed=seed, size=size)
    if key in ("mnist", "fashion-mnist"):
        return MNIST(resolution, split, fashion=key == "fashion-mnist", root=root, size=size)
    if key == "cifar10":
        return CIFAR10(resolution, split, root=root, size=size)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)} or the path of a folder "
                         f"(of images, MNIST IDX files or CIFAR-10 files); {path} is not a folder")
    if find_idx(path, "train") or find_idx(path, "holdout"):
        return MNIST(resolution, split, fashion="fashion" in path.name.lower(), root=path, size=size)
    if find_cifar(path):
        return CIFAR10(resolution, split, root=path, size=size)
    return ImageFolder(path, resolution, split, size=size)
