"""Datasets read from files: any image folder, MNIST / Fashion-MNIST (IDX files), CIFAR-10 (the python archive).

Files are looked for where the user points, then in the cache (`cache_dir`) and, for Fashion-MNIST, where
Debian's dataset-fashion-mnist package installs it; only then are they downloaded, through a temporary file so a
broken download never looks done.
"""
import gzip
import http.client
import math
import pickle
import struct
import tarfile
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from tqdm import tqdm

from minimuse.checkpoint import NumpyUnpickler
from minimuse.data.common import (DATASET_NAMES, cache_dir, check_split, evenly_spaced, resize,
                                  to_unit_range)

# ---------------------------------------------------------------------------------------------------------
# Image folder
# ---------------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
FOLDER_HOLDOUT_EVERY = 50  # the holdout split of a folder is every 50th file in sorted order


class ImageFolder(Dataset):
    """Every jpg/png/webp under `root` (recursive), resized so the shorter side is R, then centre-cropped.

    Classes follow the ImageFolder convention: when all images sit in first-level subfolders and there are at
    least two of them, the sorted subfolder names are the classes; otherwise the folder is unlabelled (label 0,
    no class names). Holdout is every 50th file in sorted order, train the rest, and "all" every file (e.g. to
    reconstruct a folder). `size` keeps that many files spread evenly over the split. The kept files are opened and verified up front; unreadable ones are
    skipped with one warning.
    """

    def __init__(self, root: str | Path, resolution: int, split: str = "train", *, size: int | None = None):
        if split != "all":
            check_split(split)
        self.root, self.resolution = Path(root).expanduser(), resolution
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}; "
                             "point to a folder of images, or use one of: " + ", ".join(DATASET_NAMES))
        relative = [p.relative_to(self.root).parts for p in files]
        subfolders = {parts[0] for parts in relative if len(parts) > 1}
        labelled = len(subfolders) >= 2 and all(len(parts) > 1 for parts in relative)
        self.class_names = sorted(subfolders) if labelled else []

        if split == "holdout":
            files = files[::FOLDER_HOLDOUT_EVERY]
        elif split == "train":
            files = [p for k, p in enumerate(files) if k % FOLDER_HOLDOUT_EVERY]
        if not files:
            raise ValueError(f"the {split} split of {self.root} is empty: the folder holds only one image")
        files = [files[k] for k in evenly_spaced(len(files), size)]
        self.files = self._readable(files)
        if not self.files:
            raise ValueError(f"none of the {len(files)} images under {self.root} could be read; "
                             "check the files are real jpg/png/webp images")
        self.labels = np.array([self.class_names.index(p.relative_to(self.root).parts[0]) if labelled else 0
                                for p in self.files], dtype=np.int64)

    def _readable(self, files: list[Path]) -> list[Path]:
        """Files that PIL can open and verify; one warning names the first few that cannot be read."""
        good, bad = [], []
        for path in tqdm(files, desc="checking images", disable=len(files) < 2000):
            try:
                with Image.open(path) as image:
                    image.verify()
                good.append(path)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                bad.append(path)
        if bad:
            names = ", ".join(str(p.relative_to(self.root)) for p in bad[:5]) + (", ..." if len(bad) > 5 else "")
            warnings.warn(f"skipped {len(bad)} unreadable image file(s) under {self.root}: {names}", stacklevel=3)
        return good

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.files[i]
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                # Scale the shorter side to R and crop the centre: one call does both.
                image = ImageOps.fit(image, (self.resolution, self.resolution), Image.Resampling.BICUBIC)
        except OSError as err:
            raise RuntimeError(f"could not read {path} ({err}); remove or replace the file") from err
        return to_unit_range(np.asarray(image)), int(self.labels[i])


# ---------------------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------------------

def download(url: str, dest: Path) -> None:
    """Fetch `url` to `dest` with a progress bar, via a temporary file so a broken download never looks done."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)


def _fetch(mirrors: list[str], filename: str, dest_dir: Path) -> bool:
    """Try each mirror in turn; True once `dest_dir/filename` exists."""
    for mirror in mirrors:
        try:
            download(mirror + filename, dest_dir / filename)
            return True
        except (OSError, http.client.HTTPException) as err:  # OSError: URL, HTTP, timeout and disk errors
            print(f"download of {mirror + filename} failed: {err}")
    return False


# ---------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)
# ---------------------------------------------------------------------------------------------------------

MNIST_CLASS_NAMES = [str(d) for d in range(10)]
FASHION_MNIST_CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
}
SYSTEM_DATASETS = Path("/usr/share/datasets")  # Debian's dataset-fashion-mnist installs here
_IDX_PREFIX = {"train": "train", "holdout": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not): magic 0x0000 08 ndim, ndim big-endian uint32
    sizes, then the data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"could not read {path} ({err}); delete it so it can be fetched again") from err
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(f"{path} is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def find_idx(folder: Path, split: str) -> tuple[Path, Path] | None:
    """(images, labels) IDX files of a split inside `folder`, gzipped or not, or None."""
    found = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        stem = f"{_IDX_PREFIX[split]}-{kind}"
        names = [f"{stem}{sep}idx{ndim}-ubyte{gz}" for sep in ("-", ".") for gz in (".gz", "")]
        found.append(next((folder / n for n in names if (folder / n).is_file()), None))
    return tuple(found) if all(found) else None


class MNIST(Dataset):
    """MNIST or Fashion-MNIST from IDX files: gray -> 3 channels; 28 -> 32 by padding 2 black pixels, any
    other R by resizing. Train uses the train files, holdout the t10k files.

    Files are looked for in `root` when given, else in the cache and in /usr/share/datasets/<name>; if absent
    they are downloaded to `root` (or the cache)."""

    def __init__(self, resolution: int = 32, split: str = "train", *, fashion: bool = False,
                 root: str | Path | None = None, size: int | None = None):
        check_split(split)
        name = "fashion-mnist" if fashion else "mnist"
        self.resolution = resolution
        self.class_names = FASHION_MNIST_CLASS_NAMES if fashion else MNIST_CLASS_NAMES
        folders = [Path(root).expanduser()] if root is not None else [cache_dir() / name, SYSTEM_DATASETS / name]
        wanted = [f"{_IDX_PREFIX[split]}-images-idx3-ubyte.gz", f"{_IDX_PREFIX[split]}-labels-idx1-ubyte.gz"]
        files = next((f for f in (find_idx(d, split) for d in folders) if f), None)
        if files is None and all(_fetch(MNIST_MIRRORS[name], n, folders[0]) for n in wanted):
            files = find_idx(folders[0], split)
        if files is None:
            raise FileNotFoundError(
                f"{name} {split} files not found in {' or '.join(map(str, folders))} and could not be downloaded. "
                f"Put {' and '.join(wanted)} (from {MNIST_MIRRORS[name][0]}) in {folders[0]}"
                + (", or `apt install dataset-fashion-mnist`" if fashion and root is None else ""))
        images, labels = read_idx(files[0]), read_idx(files[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{files[0]} and {files[1]} do not match: images {images.shape}, labels {labels.shape}")
        keep = evenly_spaced(len(images), size)
        self.images, self.labels = images[keep], labels[keep].astype(np.int64)  # (N, 28, 28) uint8, (N,)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = to_unit_range(self.images[i])  # (3, 28, 28)
        if self.resolution == x.shape[-1] + 4:  # 28 -> 32: the classic LeNet framing, no resampling
            x = F.pad(x, (2, 2, 2, 2), value=-1.0)
        return resize(x, self.resolution), int(self.labels[i])


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 (the official python-version archive)
# ---------------------------------------------------------------------------------------------------------

CIFAR_ARCHIVE, CIFAR_FOLDER = "cifar-10-python.tar.gz", "cifar-10-batches-py"
CIFAR_MIRROR = "https://www.cs.toronto.edu/~kriz/"
CIFAR_URL = CIFAR_MIRROR + CIFAR_ARCHIVE
_CIFAR_BATCHES = {"train": [f"data_batch_{k}" for k in range(1, 6)], "holdout": ["test_batch"]}


def find_cifar(folder: Path) -> Path | None:
    """The CIFAR-10 source inside `folder`: the extracted batch folder, the archive, or None."""
    for candidate in (folder / CIFAR_FOLDER, folder):
        if (candidate / "data_batch_1").is_file() or (candidate / "test_batch").is_file():
            return candidate
    return folder / CIFAR_ARCHIVE if (folder / CIFAR_ARCHIVE).is_file() else None


def _read_cifar(source: Path, names: list[str]) -> dict[str, dict]:
    """Unpickle the named batches from an extracted folder or (in one pass) from the archive."""
    def load(f) -> dict:
        return NumpyUnpickler(f, encoding="bytes").load()  # bytes: the batches are python-2 pickles

    try:
        if source.is_dir():
            batches = {}
            for n in names:
                if (source / n).is_file():
                    with open(source / n, "rb") as f:
                        batches[n] = load(f)
            return batches
        with tarfile.open(source, "r:gz") as tar:
            return {Path(m.name).name: load(tar.extractfile(m)) for m in tar
                    if m.isfile() and Path(m.name).name in names}
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError) as err:
        raise ValueError(f"could not read CIFAR-10 from {source} ({err}); delete it and download it again") from err


class CIFAR10(Dataset):
    """CIFAR-10 from the official python archive or its extracted folder; train = the 5 data batches,
    holdout = the test batch. Resized to R when R != 32.

    Looked for in `root` when given, else in the cache; if absent, the archive is downloaded there."""

    def __init__(self, resolution: int = 32, split: str = "train", *, root: str | Path | None = None,
                 size: int | None = None):
        check_split(split)
        self.resolution = resolution
        folder = Path(root).expanduser() if root is not None else cache_dir()
        source = find_cifar(folder)
        if source is None and _fetch([CIFAR_MIRROR], CIFAR_ARCHIVE, folder):
            source = folder / CIFAR_ARCHIVE
        if source is None:
            raise FileNotFoundError(f"CIFAR-10 not found in {folder} and could not be downloaded. Download "
                                    f"{CIFAR_URL} and put it (or its extracted {CIFAR_FOLDER}/) in {folder}")
        names = _CIFAR_BATCHES[split]
        batches = _read_cifar(source, names + ["batches.meta"])
        missing = [n for n in names + ["batches.meta"] if n not in batches]
        if missing:
            raise ValueError(f"{source} is incomplete ({', '.join(missing)} missing); download {CIFAR_URL} again")
        self.class_names = [n.decode() for n in batches["batches.meta"][b"label_names"]]
        images = np.concatenate([np.asarray(batches[n][b"data"], np.uint8) for n in names])  # (N, 3072)
        labels = np.concatenate([np.asarray(batches[n][b"labels"], np.int64) for n in names])
        keep = evenly_spaced(len(images), size)
        self.images, self.labels = images[keep].reshape(-1, 3, 32, 32), labels[keep]  # (N, 3, 32, 32) uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).float().div_(127.5).sub_(1.0)  # (3, 32, 32)
        return resize(x, self.resolution), int(self.labels[i])
