"""Where does a Shapes generator fall short? Probes a trained MaskGIT run folder and prints:

0. how position-free the tokens are: distinct codes per held-out grid, the share of its most common code
   (most of a Shapes image is flat background), and distinct codes per flat-colour image;
1. the checker's accuracy on held-out images and on their tokenizer reconstructions (the ceiling the
   generator can reach through this tokenizer);
2. attribute accuracy of samples under several sampler settings (if none helps, the sampler is not the limit);
3. how much the class label moves the model: the masked-token NLL on held-out token grids with the true
   label, with the same colour but another shape, and with the null class, at a few mask rates.

    python benchmarks/generator_probe.py --ckpt runs/bench-tiny
"""
import argparse
import dataclasses

import torch

from minimuse.data import COLOURS, Shapes
from minimuse.metrics import attribute_accuracy
from minimuse.sampler import generate
from minimuse.stages import load_generator
from minimuse.transformer import random_mask

SETTINGS = [{}, {"steps": 64}, {"temperature": 0.5}, {"choice_temperature": 0.0}, {"cfg": 0.0},
            {"cfg": 5.0, "cfg_schedule": "constant"}]


def distinct(ids: torch.Tensor) -> float:
    """Mean number of different codes per row of ids (N, L)."""
    return sum(len(row.unique()) for row in ids) / len(ids)


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
    flat = (torch.randint(0, 61, (args.n, 3, 1, 1)) / 127.5 - 1).expand_as(images)   # Shapes background colours
    print("## tokens")
    print(f"held-out grids: {distinct(ids):.1f} distinct codes of {ids.shape[1]}, "
          f"most common code on {(ids == ids.mode(dim=1).values[:, None]).float().mean():.0%} of the grid")
    print(f"flat-colour images: {distinct(tokenizer.encode(flat).flatten(1)):.1f} distinct codes per image")

    print("\n## checker ceiling")
    print(f"held-out images:  {summary(attribute_accuracy(images, labels, names))}")
    print(f"reconstructions:  {summary(attribute_accuracy(tokenizer.decode(grid), labels, names))}")

    per_class = args.n // len(names)
    print(f"\n## samples ({per_class} per class) under sampler settings (preset: {cfg.sampler})")
    sample_labels = torch.arange(len(names)).repeat_interleave(per_class)
    for change in SETTINGS:
        settings = dataclasses.replace(cfg.sampler, **change)
        result = attribute_accuracy(generate(model, tokenizer, sample_labels, settings, seed=0), sample_labels, names)
        print(f"{str(change or 'preset'):<45} {summary(result)}")

    print("\n## label sensitivity: masked-token NLL (nats per token) on held-out grids")
    other_shape = (labels + len(COLOURS)) % len(names)                   # same colour, the next shape
    null = torch.full_like(labels, model.null_class)
    for rate in (1.0, 0.9, 0.6, 0.3):
        masked = random_mask(torch.full((len(ids),), rate), ids.shape[1], torch.Generator().manual_seed(0))
        inputs = torch.where(masked, torch.full_like(ids, model.mask_id), ids)
        nll = [-torch.log_softmax(model(inputs, y).float(), -1).gather(-1, ids[..., None])[..., 0][masked].mean()
               for y in (labels, other_shape, null)]
        print(f"mask rate {rate:.1f}: true label {nll[0]:.3f}   other shape {nll[1]:.3f}   null class {nll[2]:.3f}")


if __name__ == "__main__":
    main()
