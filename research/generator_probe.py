"""Question: where does a trained Shapes generator fall short? Probes a MaskGIT run folder and prints:

0. what the tokens encode: distinct codes per held-out grid, the share of its most common code (most of a
   Shapes image is flat background), distinct codes per flat-colour image, and how many tokens survive
   recolouring one shape (same geometry, other colour jitter and background);
1. the checker's accuracy on held-out images and on their tokenizer reconstructions (the ceiling the
   generator can reach through this tokenizer);
2. attribute accuracy of samples under several sampler settings (`research/sampler_sweep.py`; if none helps, the
   sampler is not the limit);
3. how much the class label moves the model: the masked-token NLL on held-out token grids with the true
   label, with the same colour but another shape, and with the null class, at a few mask rates;
4. where the tokens are hard: accuracy and NLL on background, edge and interior tokens, and on one edge
   token with every other token visible;
5. inpainting: keep a random share of a held-out grid's tokens, sample the rest with the true class.

    python -m research.generator_probe --ckpt runs/tiny
"""
import argparse
import dataclasses

import torch
import torch.nn.functional as F

from minimuse.data.common import to_unit_range
from minimuse.data.shapes import (BACKGROUND_MAX, COLOUR_JITTER, COLOURS, SHAPES_CLASS_NAMES, Shapes, render_shape,
                                  shape_mask)
from minimuse.eval.shapes_checker import attribute_accuracy
from minimuse.inference import generate, load_generator

from research.sampler_sweep import sweep

SETTINGS = ["steps=64", "temperature=0.5", "choice_temperature=0", "guidance=0",
            "guidance=5,guidance_schedule=constant", "top_k=0", "top_k=10"]


def distinct(ids: torch.Tensor) -> float:
    """Mean number of different codes per row of ids (N, L)."""
    return sum(len(row.unique()) for row in ids) / len(ids)


def shape_cover(dataset: Shapes, n: int, f: int) -> torch.Tensor:
    """Share of each f x f token patch covered by the shape, for the first n images: (n, L) in [0, 1]."""
    masks = []
    for i in range(n):
        shape_pixels = torch.from_numpy(shape_mask(dataset.attributes(i))).float()      # (R, R)
        masks.append(F.avg_pool2d(shape_pixels[None, None], f)[0, 0])
    return torch.stack(masks).flatten(1)


def recoloured(dataset: Shapes, i: int, copies: int, rng: torch.Generator) -> torch.Tensor:
    """Image i redrawn `copies` times with fresh colour jitter and background: (copies, 3, R, R)."""
    a = dataset.attributes(i)
    base = torch.tensor(list(COLOURS.values())[a.colour])
    images = []
    for _ in range(copies):
        rgb = base + torch.randint(-COLOUR_JITTER, COLOUR_JITTER + 1, (3,), generator=rng)
        background = torch.randint(0, BACKGROUND_MAX + 1, (3,), generator=rng)
        redrawn = dataclasses.replace(a, rgb=tuple(rgb.tolist()), background=tuple(background.tolist()))
        images.append(to_unit_range(render_shape(redrawn)))
    return torch.stack(images)


@torch.no_grad()
def label_nll(model, grid: torch.Tensor, labels: torch.Tensor, rate: float,
              where: torch.Tensor | None = None) -> tuple[float, float, float]:
    """Masked-token NLL (nats per token) of token grids (N, h, w) with a share `rate` of each masked, given the
    true class, the same colour with the next shape, and the null class. `where` (N, L), optional: count only
    the masked positions where it is True. A model that reads the shape from the class pays more for the
    wrong shape; one that reads only the colour pays the same."""
    inputs, ids, masked = model.mask_tokens(grid, torch.Generator(grid.device).manual_seed(0), rate)  # (N, L) each
    if where is not None:
        masked = masked & where
    other_shape = (labels + len(COLOURS)) % len(SHAPES_CLASS_NAMES)      # Shapes class id = shape * 4 + colour
    null = torch.full_like(labels, model.null_class)
    return tuple(-model.logits(inputs, y).float().log_softmax(-1).gather(-1, ids[..., None])[..., 0][masked].mean().item()
                 for y in (labels, other_shape, null))


def summary(result: dict) -> str:
    return (f"accuracy {result['accuracy']:.3f}  shape {result['shape_accuracy']:.3f}  "
            f"colour {result['colour_accuracy']:.3f}")


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="run folder or generator.pt of a MaskGIT run on Shapes")
    p.add_argument("--n", type=int, default=384, help="held-out images, and samples per setting")
    args = p.parse_args()
    model, tokenizer, cfg, names = load_generator(args.ckpt, torch.device("cpu"))
    if cfg.generator.kind != "maskgit":
        raise SystemExit(f"{args.ckpt} holds a {cfg.generator.kind} generator; this probe reads MaskGIT logits")

    holdout = Shapes(cfg.data.resolution, "holdout", size=args.n)
    images = torch.stack([holdout[i][0] for i in range(args.n)])         # (N, 3, R, R)
    labels = torch.tensor([holdout[i][1] for i in range(args.n)])         # (N,)
    grid = tokenizer.encode(images)                                       # (N, h, w)
    ids = grid.flatten(1)                                                 # (N, L)
    flat = (torch.randint(0, BACKGROUND_MAX + 1, (args.n, 3, 1, 1)) / 127.5 - 1).expand_as(images)   # backgrounds
    print("## tokens")
    print(f"held-out grids: {distinct(ids):.1f} distinct codes of {ids.shape[1]}, "
          f"most common code on {(ids == ids.mode(dim=1).values[:, None]).float().mean():.0%} of the grid")
    print(f"flat-colour images: {distinct(tokenizer.encode(flat).flatten(1)):.1f} distinct codes per image")
    rng = torch.Generator().manual_seed(0)
    kept = []
    for i in range(32):
        redrawn = tokenizer.encode(recoloured(holdout, i, 16, rng)).flatten(1)          # (16, L)
        kept.append((redrawn == redrawn.mode(dim=0).values).float().mean())
    print(f"one geometry, 16 colourings: {torch.stack(kept).mean():.0%} of tokens equal their position's "
          "most common code")

    print("\n## checker ceiling")
    print(f"held-out images:  {summary(attribute_accuracy(images, labels, names))}")
    print(f"reconstructions:  {summary(attribute_accuracy(tokenizer.decode(grid), labels, names))}")

    per_class = args.n // len(names)
    print(f"\n## samples ({per_class} per class) under sampler settings (preset: {cfg.sampler})")
    for row in sweep(model, tokenizer, cfg.sampler, names, ["", *SETTINGS], per_class, seeds=(0,)):
        print(f"{row['setting']:<45} {summary(row)}")

    print("\n## label sensitivity: masked-token NLL (nats per token) on held-out grids")
    for rate in (1.0, 0.9, 0.6, 0.3):
        nll = label_nll(model, grid, labels, rate)
        print(f"mask rate {rate:.1f}: true label {nll[0]:.3f}   other shape {nll[1]:.3f}   null class {nll[2]:.3f}")

    print("\n## where the tokens are hard (mask rate 0.3; a token is edge when the shape covers part of it)")
    cover = shape_cover(holdout, args.n, tokenizer.f)                                  # (N, L)
    kinds = {"background": cover == 0, "edge": (cover > 0) & (cover < 1), "interior": cover == 1}
    inputs, _, masked = model.mask_tokens(grid, torch.Generator().manual_seed(0), 0.3)    # (N, L) each
    logits = model.logits(inputs, labels).float()
    nll = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")             # (N, L)
    right = logits.argmax(-1) == ids
    for name, where in kinds.items():
        print(f"{name:<11} {where.float().mean():4.0%} of tokens: accuracy {right[where & masked].float().mean():.3f}, "
              f"NLL {nll[where & masked].mean():.2f}")
    edge_codes = torch.bincount(ids[kinds["edge"]], minlength=model.codebook_size).float()
    p = edge_codes[edge_codes > 0] / edge_codes.sum()
    rows = torch.arange(len(ids))
    # one random edge position per image (the rare image whose shape sits exactly on token borders: any position)
    one = torch.multinomial(kinds["edge"].float() + 1e-9, 1, generator=torch.Generator().manual_seed(0))[:, 0]
    logits = model.logits(ids.index_put((rows, one), torch.tensor(model.mask_id)), labels)[rows, one].float()
    right = (logits.argmax(-1) == ids[rows, one]).float().mean()
    print(f"one edge token masked, all others visible: accuracy {right:.3f}, "
          f"NLL {F.cross_entropy(logits, ids[rows, one]):.2f} "
          f"(edge codes: {len(p)} in use, entropy {-(p * p.log()).sum():.2f})")

    print("\n## inpainting: keep a share of each held-out grid, sample the rest with the true class")
    for keep in (0.9, 0.75, 0.5, 0.25):
        inputs, _, _ = model.mask_tokens(grid, torch.Generator().manual_seed(0), 1 - keep)
        inpainted = generate(model, tokenizer, labels, cfg.sampler, seed=0, init_ids=inputs.view_as(grid))
        print(f"keep {keep:.0%}: {summary(attribute_accuracy(inpainted, labels, names))}")


if __name__ == "__main__":
    main()
