"""The Shapes checker: reads shape, colour, size and position back from pixels.

The checker is a handful of pixel rules, no network: it knows how Shapes images are drawn (`minimuse.data.shapes`), so
"did the generator draw a red circle when asked for one?" has an exact, cheap, explainable answer. It
tolerates the blur and noise of a tokenizer's reconstructions, and no more: every Shapes shape is drawn in a
square bounding box, so a 2:3 rectangle is no square and an oval no circle, whatever their corners.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minimuse.data.shapes import COLOURS, SHAPES, SHAPES_CLASS_NAMES
from minimuse.eval.metrics import as_image_batch

REFERENCE_RGB = torch.tensor(list(COLOURS.values()), dtype=torch.float32)  # (4, 3), 0..255
ROUGH_DISTANCE = 60.0  # RGB distance (0..255) from the background that surely is shape: every colour is >= 115 away
TRIANGLE_TOP_SHARE = 0.375  # share of area in the bbox's top half: triangle 1/4, circle and square 1/2
SQUARE_CORNER_SHARE = 0.55  # share of the bbox's corners (side/4 squares) covered: square 1, circle 0.32
# Longest bbox side over shortest: 1 as drawn, a little more after pixel rounding and a tokenizer's blur. The
# bound accepts every reconstruction of held-out images by the tiny preset's tokenizer and rejects a 3:4 box.
MAX_ASPECT = 1.3
CHUNK = 256  # images per step, to bound memory at large resolutions


@dataclass
class ShapeDetections:
    """What the checker read from B images. Lengths are in pixels, (cx, cy) is the bounding-box centre with the
    image spanning [0, R]; all tensors are (B,). Images with no shape found have shape = colour = -1 and NaN
    geometry; a shape found but drawn in no square box has shape -1 and its colour and geometry."""

    found: torch.Tensor  # bool
    shape: torch.Tensor  # long, index into SHAPES
    colour: torch.Tensor  # long, index into COLOURS
    side: torch.Tensor  # mean of the bounding box's width and height
    cx: torch.Tensor
    cy: torch.Tensor
    top_share: torch.Tensor  # share of the shape's area in the top half of its bounding box
    corner_share: torch.Tensor  # share of the four (side/4)^2 corner squares of the bounding box covered
    aspect: torch.Tensor  # bounding-box width / height
    fill: torch.Tensor  # share of the bounding box the shape covers

    @property
    def class_ids(self) -> torch.Tensor:
        """Shapes class ids (shape * 4 + colour), -1 where no Shapes shape was found. (B,) long."""
        return torch.where(self.found & (self.shape >= 0), self.shape * len(COLOURS) + self.colour, -1)


def _masked_median(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image median colour of the masked pixels: (B, 3, R, R), (B, R, R) -> (B, 3); NaN where mask is empty."""
    values = rgb.masked_fill(~mask[:, None], math.nan).flatten(2)  # (B, 3, R*R)
    return values.nanmedian(dim=-1).values


def _first_nonzero(counts: torch.Tensor) -> torch.Tensor:
    """Index of the first non-zero entry of each row, (B, R) -> (B,); 0 for an all-zero row."""
    return (counts > 0).float().argmax(dim=1)


def _detect(images: torch.Tensor) -> ShapeDetections:
    """`detect_shapes` on one chunk of images (B, 3, R, R)."""
    rgb = (images + 1) * 127.5  # (B, 3, R, R) in 0..255, the units of COLOURS
    r = rgb.shape[-1]
    # Background: the median border colour. A shape covers at most a quarter of the border, so it cannot sway it.
    border = torch.cat([rgb[..., 0, :], rgb[..., -1, :], rgb[..., 1:-1, 0], rgb[..., 1:-1, -1]], dim=-1)
    background = border.median(dim=-1).values  # (B, 3)
    distance = (rgb - background[..., None, None]).pow(2).sum(dim=1).sqrt()  # (B, R, R)

    # Two passes: a loose threshold finds the shape's colour; the final one sits halfway between background and
    # shape colour, which puts a blurred edge back where the sharp edge was.
    shape_rgb = _masked_median(rgb, distance > ROUGH_DISTANCE)  # (B, 3)
    halfway = (shape_rgb - background).pow(2).sum(dim=-1).sqrt() / 2  # (B,), NaN when nothing stood out
    mask = distance > halfway[:, None, None]  # comparisons with NaN are False
    # Noise specks: keep a pixel only when at least 3 pixels of its 3x3 neighbourhood (itself included) are set.
    neighbours = 9 * F.avg_pool2d(mask.float()[:, None], 3, stride=1, padding=1, count_include_pad=True)[:, 0]
    mask &= neighbours > 2.5

    rows, cols = mask.sum(dim=2), mask.sum(dim=1)  # (B, R) pixels per row / column
    area = rows.sum(dim=1)  # (B,)
    found = area > 0
    y0, x0 = _first_nonzero(rows), _first_nonzero(cols)
    y1, x1 = r - 1 - _first_nonzero(rows.flip(1)), r - 1 - _first_nonzero(cols.flip(1))
    height, width = (y1 - y0 + 1).float(), (x1 - x0 + 1).float()
    side = (height + width) / 2
    pixels = torch.arange(r, device=rgb.device)
    # Row y spans [y, y + 1]; the part of it above the bbox's middle line counts towards the top half.
    middle = (y0 + y1 + 1).float()[:, None] / 2  # (B, 1)
    top_share = (rows * (middle - pixels).clamp(0, 1)).sum(dim=1) / area
    # Corners: pixels within side/4 of two sides of the bbox. Full for a square, under a third for a circle;
    # a better cue than the bbox fill ratio, which blur and edge noise move for both shapes alike.
    k = (side / 4).round().clamp(min=1)[:, None]  # (B, 1)
    near_x = torch.minimum(pixels - x0[:, None], x1[:, None] - pixels)  # (B, R), < 0 outside the bbox
    near_y = torch.minimum(pixels - y0[:, None], y1[:, None] - pixels)
    corners = ((near_y >= 0) & (near_y < k))[:, :, None] & ((near_x >= 0) & (near_x < k))[:, None, :]  # (B, R, R)
    corner_share = (mask & corners).flatten(1).sum(dim=1) / corners.flatten(1).sum(dim=1)

    shape = torch.where(top_share < TRIANGLE_TOP_SHARE, SHAPES.index("triangle"),
                        torch.where(corner_share > SQUARE_CORNER_SHARE, SHAPES.index("square"), SHAPES.index("circle")))
    aspect = width / height
    shape = torch.where(torch.maximum(aspect, 1 / aspect) <= MAX_ASPECT, shape, -1)   # no Shapes shape
    # Colour: nearest reference to the median colour of the final mask (its core dominates the blurred rim).
    distances = torch.cdist(_masked_median(rgb, mask), REFERENCE_RGB.to(rgb.device))  # (B, 4)
    colour = distances.nan_to_num(math.inf).argmin(dim=1)
    nan = torch.full_like(side, math.nan)
    return ShapeDetections(
        found=found,
        shape=torch.where(found, shape, -1),
        colour=torch.where(found, colour, -1),
        side=torch.where(found, side, nan),
        cx=torch.where(found, (x0 + x1 + 1).float() / 2, nan),
        cy=torch.where(found, (y0 + y1 + 1).float() / 2, nan),
        top_share=torch.where(found, top_share, nan),
        corner_share=torch.where(found, corner_share, nan),
        aspect=torch.where(found, aspect, nan),
        fill=torch.where(found, area / (width * height), nan),
    )


@torch.no_grad()
def detect_shapes(images: torch.Tensor) -> ShapeDetections:
    """Read shape, colour and bounding box from Shapes-style images (B, 3, R, R) or (3, R, R) in [-1, 1].

    Rules: background = median border colour; shape pixels = those farther from it than half the distance to
    the shape's own (median) colour, minus isolated specks; colour = nearest of COLOURS; shape = none (-1) when
    the bounding box's longer side is over MAX_ASPECT times its shorter, else triangle when under 3/8 of the area
    lies in the bounding box's top half (apex up), else square when the shape covers over 0.55 of the bounding
    box's corners, else circle.
    """
    images = as_image_batch(images)
    parts = [_detect(chunk) for chunk in images.split(CHUNK)]
    return ShapeDetections(*(torch.cat([getattr(p, f) for p in parts]) for f in ShapeDetections.__dataclass_fields__))


def classify_shapes(images: torch.Tensor) -> tuple[torch.Tensor, ShapeDetections]:
    """Shapes class ids (B,) read from pixels (-1 where no shape was found), and the full detections."""
    detections = detect_shapes(images)
    return detections.class_ids, detections


def attribute_accuracy(images: torch.Tensor, labels, class_names: list[str] | None = None) -> dict:
    """How often the checker reads back the intended class from images (B, 3, R, R) with labels (B,).

    Returns {"accuracy", "shape_accuracy", "colour_accuracy", "detected": fractions over all images,
    "per_class": {name: {"accuracy", "count"}}} (accuracy NaN for a class with no images).
    """
    class_names = SHAPES_CLASS_NAMES if class_names is None else class_names
    if len(class_names) != len(SHAPES_CLASS_NAMES):
        raise ValueError(f"Shapes has {len(SHAPES_CLASS_NAMES)} classes, got {len(class_names)} class names")
    images = as_image_batch(images)
    labels = torch.as_tensor(labels).long().flatten().to(images.device)
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(class_names):
        raise ValueError(f"labels must be Shapes class ids in [0, {len(class_names)}), got {labels.unique().tolist()}")
    predicted, detections = classify_shapes(images)
    correct = predicted == labels
    counts = torch.bincount(labels, minlength=len(class_names)).tolist()
    hits = torch.bincount(labels[correct], minlength=len(class_names)).tolist()
    per_class = {name: {"accuracy": h / n if n else math.nan, "count": n}
                 for name, h, n in zip(class_names, hits, counts)}
    return {
        "accuracy": correct.float().mean().item(),
        "shape_accuracy": (detections.shape == labels // len(COLOURS)).float().mean().item(),
        "colour_accuracy": (detections.colour == labels % len(COLOURS)).float().mean().item(),
        "detected": detections.found.float().mean().item(),
        "per_class": per_class,
    }


def format_report(result: dict) -> str:
    """A plain-text table of an `attribute_accuracy` result: one line per class, then the totals."""
    lines = [f"{'class':<16}{'count':>7}{'accuracy':>10}"]
    for name, row in result["per_class"].items():
        lines.append(f"{name:<16}{row['count']:>7}{row['accuracy']:>10.3f}")
    total = sum(row["count"] for row in result["per_class"].values())
    lines.append(f"{'all':<16}{total:>7}{result['accuracy']:>10.3f}")
    lines.append(f"shape {result['shape_accuracy']:.3f}   colour {result['colour_accuracy']:.3f}   "
                 f"detected {result['detected']:.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Spread: do generated shapes vary in position and size as much as the data's?
# ---------------------------------------------------------------------------------------------------------

SPREAD_KEYS = ("cx", "cy", "side")


def spread_stats(images: torch.Tensor) -> dict:
    """Mean and std of the detected centre x, centre y and side, as fractions of R, over the images where a
    shape was found: {"cx_mean", "cx_std", "cy_mean", "cy_std", "side_mean", "side_std", "detected"}."""
    detections = detect_shapes(images)
    r = images.shape[-1]
    stats = {"detected": detections.found.float().mean().item()}
    for key in SPREAD_KEYS:
        values = getattr(detections, key)[detections.found] / r
        stats[f"{key}_mean"] = values.mean().item() if len(values) else math.nan
        stats[f"{key}_std"] = values.std().item() if len(values) > 1 else math.nan
    return stats


def compare_spread(generated: dict, data: dict) -> dict:
    """Relative difference of each std, (generated - data) / data, for cx, cy and side: negative means the
    generator varies less than the data (e.g. mode collapse); "within 20%" means abs(value) <= 0.2."""
    return {key: (generated[f"{key}_std"] - data[f"{key}_std"]) / data[f"{key}_std"] for key in SPREAD_KEYS}
