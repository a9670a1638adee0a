"""Tests for minimuse.eval: PSNR matches its formula; the Shapes checker reads clean and degraded images
correctly; spread statistics match what the Shapes spec implies."""
import math

import pytest
import torch
import torch.nn.functional as F

from minimuse.data.shapes import SHAPES_CLASS_NAMES, Shapes
from minimuse.eval.metrics import psnr
from minimuse.eval.shapes_checker import (MAX_ASPECT, attribute_accuracy, classify_shapes, compare_spread,
                                          detect_shapes, format_report, spread_stats)


def shapes_batch(n: int, resolution: int = 32):
    d = Shapes(resolution, "holdout", size=n)
    images, labels = zip(*(d[i] for i in range(n)))
    return torch.stack(images), torch.tensor(labels), d  # (n, 3, R, R), (n,)


@pytest.fixture(scope="module")
def clean():
    """500 held-out Shapes images at R = 32, their labels and the dataset."""
    return shapes_batch(500)


def degrade(images: torch.Tensor, sigma: float = 0.7, noise: float = 0.05) -> torch.Tensor:
    """Gaussian blur (5x5 kernel) plus Gaussian noise: roughly what a tokenizer's reconstructions look like."""
    taps = torch.exp(-torch.arange(-2, 3.0) ** 2 / (2 * sigma**2))
    kernel = (taps[:, None] * taps[None]) / taps.sum() ** 2
    blurred = F.conv2d(F.pad(images, (2, 2, 2, 2), mode="replicate"), kernel.expand(3, 1, 5, 5), groups=3)
    return (blurred + noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)


def test_psnr_formula():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() and psnr(x, x).shape == (4,)
    y = torch.full((2, 3, 8, 8), -0.5)
    # An error of 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB.
    assert torch.allclose(psnr(y, y + 0.2), torch.tensor([20.0, 20.0]))
    assert torch.allclose(psnr(y[0], y[0] - 0.02), torch.tensor([40.0]))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:2])


def test_checker_reads_clean_shapes(clean):
    images, labels, d = clean
    predicted, det = classify_shapes(images)
    assert (predicted == labels).float().mean() >= 0.99
    assert det.found.all()
    sides = torch.tensor([d.attributes(i).side for i in range(500)])
    cx = torch.tensor([d.attributes(i).cx for i in range(500)])
    cy = torch.tensor([d.attributes(i).cy for i in range(500)])
    assert (det.cx - cx).abs().max() < 1.0 and (det.cy - cy).abs().max() < 1.0
    assert (det.side - sides).abs().mean() < 1.0
    single, _ = classify_shapes(images[0])
    assert single.tolist() == [labels[0].item()]


def drawn(mask: torch.Tensor, rgb=(220, 40, 40), background=(20, 20, 20)) -> torch.Tensor:
    """A (3, R, R) image in [-1, 1] of `mask` (R, R) bool in colour `rgb` on `background`."""
    colours = torch.tensor([background, rgb], dtype=torch.float32) / 127.5 - 1
    return colours[mask.long()].permute(2, 0, 1)


def test_a_shape_in_a_box_that_is_not_square_is_no_shapes_shape():
    """Every Shapes shape is drawn in a square box: a 2:3 rectangle with full corners is no square, an oval no
    circle, though their corner share says square and circle. The colour is still read."""
    y, x = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    square = ((x - 16).abs() <= 6) & ((y - 16).abs() <= 6)
    rectangle = ((x - 16).abs() <= 5) & ((y - 16).abs() <= 7.5)             # 10 x 15: 2:3
    circle = (x - 16) ** 2 + (y - 16) ** 2 <= 7 ** 2
    oval = ((x - 16) / 5) ** 2 + ((y - 16) / 7.5) ** 2 <= 1
    ids, det = classify_shapes(torch.stack([drawn(m) for m in (square, rectangle, circle, oval)]))
    assert ids.tolist() == [SHAPES_CLASS_NAMES.index("red square"), -1, SHAPES_CLASS_NAMES.index("red circle"), -1]
    assert det.shape.tolist() == [1, -1, 0, -1] and (det.colour == 0).all() and det.found.all()
    assert det.corner_share[1] > 0.9 and det.aspect[1] == pytest.approx(10 / 15, abs=0.05)


def test_checker_at_higher_resolution():
    images, labels, _ = shapes_batch(120, resolution=64)
    result = attribute_accuracy(images, labels)
    assert result["accuracy"] >= 0.99


def test_checker_tolerates_blur_and_noise(clean):
    images, labels, _ = clean
    result = attribute_accuracy(degrade(images), labels)
    assert result["accuracy"] >= 0.95 and result["colour_accuracy"] >= 0.99 and result["detected"] == 1.0
    aspect = detect_shapes(degrade(images)).aspect
    assert torch.maximum(aspect, 1 / aspect).max() <= MAX_ASPECT           # blur never pushes a box past it


def test_checker_reports_missing_shapes():
    blank = torch.full((2, 3, 32, 32), -0.8)
    ids, det = classify_shapes(blank)
    assert ids.tolist() == [-1, -1] and not det.found.any() and det.side.isnan().all()
    result = attribute_accuracy(blank, [0, 5])
    assert result["accuracy"] == 0.0 and result["detected"] == 0.0


def test_attribute_accuracy_report(clean):
    images, labels = clean[0][:60], clean[1][:60]
    result = attribute_accuracy(images, labels)
    assert set(result) == {"accuracy", "shape_accuracy", "colour_accuracy", "detected", "per_class"}
    assert list(result["per_class"]) == SHAPES_CLASS_NAMES
    assert sum(row["count"] for row in result["per_class"].values()) == 60
    wrong = attribute_accuracy(images, (labels + 1) % 4 + labels // 4 * 4)  # right shape, wrong colour
    assert wrong["accuracy"] == 0.0 and wrong["colour_accuracy"] == 0.0 and wrong["shape_accuracy"] == 1.0
    report = format_report(result)
    assert "red circle" in report and "yellow triangle" in report and report.count("\n") == 14
    with pytest.raises(ValueError, match="labels"):
        attribute_accuracy(images, labels[:10])
    with pytest.raises(ValueError, match="class ids"):
        attribute_accuracy(images, labels + 12)


def test_spread_stats_match_the_spec(clean):
    images = clean[0]
    stats = spread_stats(images)
    assert stats["detected"] == 1.0
    # Side/R is uniform on [1/4, 1/2]: mean 3/8, std (1/4)/sqrt(12). A centre sits uniformly where the box
    # fits: mean 1/2, variance E[(1 - side/R)^2] / 12 = 0.033.
    assert abs(stats["side_mean"] - 0.375) < 0.02 and abs(stats["side_std"] - 0.25 / math.sqrt(12)) < 0.01
    for axis in ("cx", "cy"):
        assert abs(stats[f"{axis}_mean"] - 0.5) < 0.03 and abs(stats[f"{axis}_std"] - math.sqrt(0.033)) < 0.015
    assert all(v == 0 for v in compare_spread(stats, stats).values())
    collapsed = spread_stats(images[:1].expand(50, -1, -1, -1))  # one image, 50 times: no spread at all
    assert all(v == pytest.approx(-1.0) for v in compare_spread(collapsed, stats).values())


def test_detect_shapes_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        detect_shapes(torch.zeros(2, 1, 32, 32))
