"""Datasets: procedural Shapes (the default, no download), image folders, MNIST / Fashion-MNIST, CIFAR-10.

Every dataset yields `(image, label)` with `image` a float32 tensor `(3, R, R)` in [-1, 1] and `label` an int,
and has `class_names: list[str]` (empty for an unlabelled image folder, whose labels are all 0).
`build_dataset` turns a name or a path into one of them; it is the only function the trainer needs.
"""
import gzip
import http.client
import math
import os
import pickle
import struct
import tarfile
import urllib.request
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from tqdm import tqdm

SPLITS = ("train", "holdout")
DATASET_NAMES = ("shapes", "mnist", "fashion-mnist", "cifar10")


def cache_dir() -> Path:
    """Where downloads go: $MINIMUSE_CACHE, else ~/.cache/minimuse."""
    return Path(os.environ.get("MINIMUSE_CACHE", "~/.cache/minimuse")).expanduser()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels (H, W, 3) or (H, W) -> float32 tensor (3, H, W) in [-1, 1]."""
    x = pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)  # numpy: cheaper than torch ops here
    x = np.broadcast_to(x, (3, *x.shape)) if x.ndim == 2 else x.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(x))


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(3, h, w) in [-1, 1] -> (3, R, R), antialiased bicubic; a no-op when the size already matches."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    x = F.interpolate(x[None], size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    return x[0].clamp_(-1.0, 1.0)


def _evenly_spaced(n: int, size: int | None) -> np.ndarray:
    """Indices of `size` items spread evenly over `n` (all of them when size is None): a deterministic subset
    that keeps every class of a class-sorted dataset."""
    if size is None:
        return np.arange(n)
    if not 0 < size <= n:
        raise ValueError(f"size={size} but this split holds {n} items; use a size between 1 and {n}")
    return np.linspace(0, n - 1, size).round().astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Shapes: one filled circle / square / triangle on a dark background, rendered on demand from a seed
# ---------------------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (50, 80, 230), "yellow": (230, 220, 40)}
SHAPES_CLASS_NAMES = [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]  # id = shape * 4 + colour
SHAPES_SPLIT_SIZES = {"train": 50_000, "holdout": 1_000}
COLOUR_JITTER = 25  # each channel of the shape colour moves uniformly by up to this much
BACKGROUND_MAX = 60  # each background channel is uniform in [0, BACKGROUND_MAX]
_ROWS, _COLUMNS = ("top", "middle", "bottom"), ("left", "center", "right")


@dataclass(frozen=True)
class ShapeAttributes:
    """Everything that decides one Shapes image. Lengths are in pixels; (cx, cy) is the bounding-box centre
    with x to the right and y down, the image spanning [0, R] on both axes."""

    resolution: int
    shape: int  # index into SHAPES
    colour: int  # index into COLOURS
    side: float  # bounding-box side, uniform in [R/4, R/2]
    cx: float
    cy: float
    rgb: tuple[int, int, int]  # jittered shape colour
    background: tuple[int, int, int]

    @property
    def label(self) -> int:
        return self.shape * len(COLOURS) + self.colour

    @property
    def caption(self) -> str:
        """E.g. "a small blue triangle at the top left": small means side < 3R/8, and the cell is the one of the
        3 x 3 grid holding the centre; the middle-center cell reads "at the center"."""
        r = self.resolution
        size = "small" if self.side < 3 * r / 8 else "large"
        row, column = min(int(3 * self.cy / r), 2), min(int(3 * self.cx / r), 2)
        where = "center" if (row, column) == (1, 1) else f"{_ROWS[row]} {_COLUMNS[column]}"
        return f"a {size} {list(COLOURS)[self.colour]} {SHAPES[self.shape]} at the {where}"


def shape_mask(a: ShapeAttributes) -> np.ndarray:
    """Which pixels the shape covers -> bool (R, R). A pixel belongs to the shape when its centre does: exact, no
    antialiasing. The triangle is upright: apex at the top centre of the bounding box, base along its bottom."""
    centres = np.arange(a.resolution) + 0.5
    x, y = centres[None, :], centres[:, None]  # (1, R) and (R, 1): broadcast to (R, R)
    half = a.side / 2
    if SHAPES[a.shape] == "circle":
        return (x - a.cx) ** 2 + (y - a.cy) ** 2 <= half**2
    if SHAPES[a.shape] == "square":
        return (np.abs(x - a.cx) <= half) & (np.abs(y - a.cy) <= half)
    depth = y - (a.cy - half)  # distance below the apex; the half-width grows as depth / 2
    return (depth >= 0) & (depth <= a.side) & (np.abs(x - a.cx) <= depth / 2)


def render_shape(a: ShapeAttributes) -> np.ndarray:
    """Draw one Shapes image -> uint8 (R, R, 3): the shape's colour on `shape_mask`, the background elsewhere."""
    palette = np.array([a.background, a.rgb], np.uint8)  # (2, 3): row 0 outside, row 1 inside
    return np.take(palette, shape_mask(a).view(np.uint8), axis=0)


class Shapes(Dataset):
    """Procedural coloured shapes: 3 shapes x 4 colours = 12 classes, with a caption per image.

    Item i of a split is drawn from `np.random.default_rng([seed, split_id, i])`, so any item is reproducible
    on its own and the dataset costs nothing to build. Train and holdout use different split ids.
    """

    def __init__(self, resolution: int = 32, split: str = "train", *, seed: int = 0, size: int | None = None):
        _check_split(split)
        if resolution < 8:
            raise ValueError(f"Shapes needs a resolution of at least 8 pixels, got {resolution}")
        self.resolution, self.split, self.seed = resolution, split, seed
        self.size = SHAPES_SPLIT_SIZES[split] if size is None else size
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        self.class_names = list(SHAPES_CLASS_NAMES)

    def __len__(self) -> int:
        return self.size

    def attributes(self, i: int) -> ShapeAttributes:
        """The attributes of item i (cheap: a few random draws, no rendering)."""
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for Shapes of size {self.size}")
        # One call for all eleven uniforms in [0, 1), mapped below: several times cheaper than eleven calls.
        u = np.random.default_rng([self.seed, SPLITS.index(self.split), i]).random(11).tolist()
        r = self.resolution
        shape, colour = int(u[0] * len(SHAPES)), int(u[1] * len(COLOURS))
        side = r / 4 + u[2] * r / 4
        cx, cy = (side / 2 + v * (r - side) for v in u[3:5])  # keeps the whole bounding box inside the image
        jitter = (int(v * (2 * COLOUR_JITTER + 1)) - COLOUR_JITTER for v in u[5:8])  # integers in [-25, 25]
        rgb = tuple(c + j for c, j in zip(list(COLOURS.values())[colour], jitter))
        background = tuple(int(v * (BACKGROUND_MAX + 1)) for v in u[8:11])  # integers in [0, 60]
        return ShapeAttributes(r, shape, colour, side, cx, cy, rgb, background)

    def caption(self, i: int) -> str:
        return self.attributes(i).caption

    @cached_property
    def labels(self) -> np.ndarray:
        """Class ids of all items, (N,) int64 (computed once, about 1 s per 50,000 items)."""
        return np.array([self.attributes(i).label for i in range(self.size)], dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = self.attributes(i)
        return to_unit_range(render_shape(a)), a.label


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
            _check_split(split)
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
        files = [files[k] for k in _evenly_spaced(len(files), size)]
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
        _check_split(split)
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
        keep = _evenly_spaced(len(images), size)
        self.images, self.labels = images[keep], labels[keep].astype(np.int64)  # (N, 28, 28) uint8, (N,)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = to_unit_range(self.images[i])  # (3, 28, 28)
        if self.resolution == x.shape[-1] + 4:  # 28 -> 32: the classic LeNet framing, no resampling
            x = F.pad(x, (2, 2, 2, 2), value=-1.0)
        return _resize(x, self.resolution), int(self.labels[i])


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 (the official python-version archive)
# ---------------------------------------------------------------------------------------------------------

CIFAR_ARCHIVE, CIFAR_FOLDER = "cifar-10-python.tar.gz", "cifar-10-batches-py"
CIFAR_MIRROR = "https://www.cs.toronto.edu/~kriz/"
CIFAR_URL = CIFAR_MIRROR + CIFAR_ARCHIVE
_CIFAR_BATCHES = {"train": [f"data_batch_{k}" for k in range(1, 6)], "holdout": ["test_batch"]}


class _ArrayUnpickler(pickle.Unpickler):
    """Loads plain containers and numpy arrays only. A pickle can run any code it names, and CIFAR's
    batches come from the internet, so every other global is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def find_cifar(folder: Path) -> Path | None:
    """The CIFAR-10 source inside `folder`: the extracted batch folder, the archive, or None."""
    for candidate in (folder / CIFAR_FOLDER, folder):
        if (candidate / "data_batch_1").is_file() or (candidate / "test_batch").is_file():
            return candidate
    return folder / CIFAR_ARCHIVE if (folder / CIFAR_ARCHIVE).is_file() else None


def _read_cifar(source: Path, names: list[str]) -> dict[str, dict]:
    """Unpickle the named batches from an extracted folder or (in one pass) from the archive."""
    def load(f) -> dict:
        return _ArrayUnpickler(f, encoding="bytes").load()  # bytes: the batches are python-2 pickles

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
        _check_split(split)
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
        keep = _evenly_spaced(len(images), size)
        self.images, self.labels = images[keep].reshape(-1, 3, 32, 32), labels[keep]  # (N, 3, 32, 32) uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).float().div_(127.5).sub_(1.0)  # (3, 32, 32)
        return _resize(x, self.resolution), int(self.labels[i])


# ---------------------------------------------------------------------------------------------------------
# One entry point
# ---------------------------------------------------------------------------------------------------------

def build_dataset(name: str, resolution: int, split: str = "train", *, seed: int = 0, size: int | None = None,
                  root: str | None = None) -> Dataset:
    """Build a dataset by name: shapes | mnist | fashion-mnist | cifar10 | PATH.

    A PATH is a folder holding MNIST-style IDX files (Fashion-MNIST class names when the folder name contains
    "fashion"), CIFAR-10's archive or batches, or else any folder of images. `seed` picks the Shapes images
    (the file datasets are fixed); `size` is the split size for Shapes and keeps an evenly spread subset of
    the others; `root` is where the files of mnist / fashion-mnist / cifar10 live.
    """
    _check_split(split)
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
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
