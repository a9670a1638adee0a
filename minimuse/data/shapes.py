"""Shapes: one filled circle, square or triangle on a dark background, rendered on demand from a seed.

The default dataset: procedural, no download, 12 classes ("red circle" ...), a caption per image, and exact
attributes that the Shapes checker (`minimuse.eval.shapes_checker`) reads back from pixels.
"""
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch.utils.data import Dataset

from minimuse.data.common import SPLITS, check_split, to_unit_range

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
        check_split(split)
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
