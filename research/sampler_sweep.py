"""Question: which sampler settings draw a trained Shapes generator's samples most faithfully? Attribute accuracy
and spread of its samples under several settings.

Each setting is a comma-separated list of `SamplerConfig` fields, applied on top of the run's own sampler;
every setting is sampled at the same seeds (384 images per seed by default), and the figures are the mean
over the seeds, so the settings are compared on equal footing.

    python -m research.sampler_sweep --ckpt runs/tiny top_k=0 top_k=10 "top_k=10,guidance=4" temperature=0.7
    python -m research.sampler_sweep --ckpt runs/tiny --sizes steps=16      # mean side per shape, vs the data's
    python -m research.sampler_sweep --ckpt runs/tiny --misread misread.png # what the checker rejects, per class
"""
import argparse
import copy
import statistics
from collections.abc import Iterator

import torch

from minimuse.config import RunConfig, SamplerConfig, apply_overrides
from minimuse.data import build_dataset
from minimuse.data.shapes import COLOURS, SHAPES
from minimuse.eval.shapes_checker import (attribute_accuracy, classify_shapes, compare_spread, detect_shapes,
                                          spread_stats)
from minimuse.inference import generate, load_generator
from minimuse.viz import save_grid


def with_setting(sampler: SamplerConfig, setting: str) -> SamplerConfig:
    """The run's sampler with "key=value,key=value" applied (checked and typed as `--set sampler.key=value`)."""
    cfg = RunConfig(sampler=copy.deepcopy(sampler))
    return apply_overrides(cfg, [f"sampler.{item}" for item in setting.split(",") if item]).sampler


def side_per_shape(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean detected side (pixels) of the images of each shape, grouped by the shape they were meant to show."""
    detected = detect_shapes(images)
    shape = labels // len(COLOURS)
    return {name: detected.side[(shape == i) & detected.found].mean().item() for i, name in enumerate(SHAPES)}


def misread_rows(images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_row: int = 8) -> torch.Tensor:
    """The images the checker does not read as their label, one row of up to `per_row` per class (blank, white,
    where a class has fewer): (num_classes * per_row, 3, H, W), for `save_grid(..., nrow=per_row)`."""
    read, _ = classify_shapes(images)
    rows = torch.ones(num_classes, per_row, *images.shape[1:])
    for k in range(num_classes):
        wrong = images[(labels == k) & (read != k)][:per_row]
        rows[k, : len(wrong)] = wrong
    return rows.flatten(0, 1)


def longest_box_ratio(images: torch.Tensor) -> float:
    """The largest longer-over-shorter side of the detected bounding boxes (the checker rejects past MAX_ASPECT)."""
    aspect = detect_shapes(images).aspect
    return torch.maximum(aspect, 1 / aspect).nan_to_num(0).max().item()


def format_sides(side: dict[str, float]) -> str:
    return "side per shape " + ", ".join(f"{name} {px:.1f} px" for name, px in side.items())


@torch.no_grad()
def sweep(model, tokenizer, sampler: SamplerConfig, names: list[str], settings: list[str], per_class: int = 32,
          seeds: tuple[int, ...] = (0, 1), real_spread: dict | None = None) -> Iterator[dict]:
    """For each setting ("" = the run's own), as soon as it is sampled: mean accuracy, shape and colour accuracy
    and accuracy per class over `seeds`, the accuracy at each seed, the mean side per shape over `seeds`,
    (given the data's `spread_stats`) the spread of the samples at each seed, and the samples of the first seed
    with their labels."""
    labels = torch.arange(len(names)).repeat_interleave(per_class)
    for setting in settings:
        s = with_setting(sampler, setting)
        results, spreads, sides = [], [], []
        for seed in seeds:
            images = generate(model, tokenizer, labels, s, seed)
            if seed == seeds[0]:
                first_images = images
            results.append(attribute_accuracy(images, labels, names))
            sides.append(side_per_shape(images, labels))
            if real_spread is not None:
                spreads.append(compare_spread(spread_stats(images), real_spread))
        yield {"setting": setting or "the run's sampler",
               **{k: statistics.mean(r[k] for r in results)
                  for k in ("accuracy", "shape_accuracy", "colour_accuracy")},
               "per_class": {name: statistics.mean(r["per_class"][name]["accuracy"] for r in results)
                             for name in names},
               "per_seed": [r["accuracy"] for r in results], "spread": spreads,
               "side_per_shape": {name: statistics.mean(d[name] for d in sides) for name in SHAPES},
               "first_seed": (first_images, labels)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="run folder or generator.pt of a run on Shapes")
    p.add_argument("--per-class", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--per-class-report", action="store_true", help="also print every class's accuracy")
    p.add_argument("--sizes", action="store_true", help="also print the mean side of each shape, "
                   "the data's, and its reconstructions' (with their accuracy under the checker)")
    p.add_argument("--misread", metavar="PNG", help="also save the samples the checker misreads with the run's "
                   "sampler at the first seed, a row of up to 8 per class (blank: none)")
    p.add_argument("settings", nargs="*", help='e.g. top_k=10 "guidance=3,guidance_schedule=constant"')
    args = p.parse_args()
    model, tokenizer, cfg, names = load_generator(args.ckpt, torch.device("cpu"))
    holdout = build_dataset("shapes", cfg.data.resolution, "holdout", seed=cfg.seed, size=cfg.data.holdout_size)
    data = torch.stack([holdout[i][0] for i in range(len(holdout))])
    real = spread_stats(data)
    print(f"{args.ckpt}: {args.per_class} samples per class at seeds {args.seeds}; the run's sampler: {cfg.sampler}")
    if args.sizes:
        data_labels = torch.tensor([holdout[i][1] for i in range(len(holdout))])
        print("held-out data:", format_sides(side_per_shape(data, data_labels)))
        with torch.no_grad():
            rec = tokenizer.decode(tokenizer.encode(data))
        print("its reconstructions by the tokenizer:", format_sides(side_per_shape(rec, data_labels)))
        checked = attribute_accuracy(rec, data_labels, names)            # the most a generator can show here
        print(f"    the checker reads {checked['accuracy']:.1%} of them right: "
              + ", ".join(f"{name} {c['accuracy']:.0%}" for name, c in checked["per_class"].items()))
        print("longest bounding-box ratio: data {:.3f}, reconstructions {:.3f}".format(
            *(longest_box_ratio(images) for images in (data, rec))))
    for i, row in enumerate(sweep(model, tokenizer, cfg.sampler, names, ["", *args.settings], args.per_class,
                                  tuple(args.seeds), real)):
        spread = "; ".join(", ".join(f"{k} {v:+.1%}" for k, v in s.items()) for s in row["spread"])
        worst = min(row["per_class"], key=row["per_class"].get)
        print(f"{row['setting']:<40} accuracy {row['accuracy']:.1%} (per seed "
              + " ".join(f"{a:.1%}" for a in row["per_seed"])
              + f"), shape {row['shape_accuracy']:.1%}, colour {row['colour_accuracy']:.1%}, "
              + f"worst class {worst} {row['per_class'][worst]:.1%}; spread {spread}", flush=True)
        if args.sizes:
            print("    " + format_sides(row["side_per_shape"]), flush=True)
        if args.per_class_report:
            print("    " + ", ".join(f"{name} {a:.0%}" for name, a in row["per_class"].items()), flush=True)
        if args.misread and i == 0:                                       # the run's own sampler
            save_grid(misread_rows(*row["first_seed"], len(names)), args.misread, nrow=8, scale=4)
            print(f"wrote {args.misread}: misread samples, a row per class in the order {', '.join(names)}")


if __name__ == "__main__":
    main()
