"""Sample from a trained run, or reconstruct images through its tokenizer.

    python sample.py --ckpt runs/tiny --out samples.png                     # every class, one row each
    python sample.py --ckpt runs/tiny --class "red circle" --n 16 --out red/   # 16 PNGs + red/grid.png
    python sample.py --ckpt runs/tiny --class 3 --steps 12 --guidance 3 --filmstrip --out c3.png
    python sample.py --ckpt runs/tiny --set sampler.top_k=0 --set sampler.schedule=linear --out plain.png
    python sample.py --ckpt runs/tiny --reconstruct my_images/ --out recon/
"""
import argparse
import sys
from pathlib import Path

import torch

from minimuse.checkpoint import CheckpointError
from minimuse.config import apply_overrides
from minimuse.data.files import ImageFolder
from minimuse.eval.metrics import psnr
from minimuse.inference import generate, load_generator, load_tokenizer
from minimuse.masking import SCHEDULES
from minimuse.runtime import pick_device
from minimuse.viz import save_filmstrip, save_grid, save_image


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="run folder or checkpoint file (generator.pt / tokenizer.pt)")
    p.add_argument("--out", required=True, help="x.png: one grid; DIR/: one PNG per image plus DIR/grid.png")
    p.add_argument("--reconstruct", metavar="IMAGE_DIR", help="reconstruct a folder's images through the tokenizer")
    p.add_argument("--class", dest="cls", default=None,
                   help='class id or name, e.g. 3 or "red circle" (default: every class)')
    p.add_argument("--n", type=int, default=None, help="images per class (default: 16 for one class, 8 for all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--filmstrip", action="store_true", help="also save the canvas after every decoding step")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda > mps > cpu)")
    sampler = p.add_argument_group("sampler settings (default: the run's own; each is a sampler.* key)")
    sampler.add_argument("--steps", type=int, help="decoding steps")
    sampler.add_argument("--guidance", "--cfg", dest="guidance", type=float, help="classifier-free guidance scale s")
    sampler.add_argument("--temperature", type=float, help="token sampling temperature")
    sampler.add_argument("--choice-temperature", type=float, help="confidence noise scale")
    sampler.add_argument("--top-k", type=int, help="sample among the k most likely tokens (0: all)")
    sampler.add_argument("--schedule", choices=list(SCHEDULES), help="mask schedule")
    sampler.add_argument("--set", dest="overrides", action="append", default=[], metavar="sampler.KEY=VALUE",
                         help="any sampler setting, e.g. --set sampler.guidance_schedule=constant (repeatable)")
    return p.parse_args(argv)


def sampler_overrides(args: argparse.Namespace) -> list[str]:
    """The sampler flags and --set items as `--set` strings, checked to touch only sampler.* keys: the model's
    own configuration comes from the checkpoint."""
    flags = {"steps": args.steps, "guidance": args.guidance, "temperature": args.temperature,
             "choice_temperature": args.choice_temperature, "top_k": args.top_k, "schedule": args.schedule}
    overrides = [f"sampler.{k}={v}" for k, v in flags.items() if v is not None] + args.overrides
    for item in args.overrides:
        if not item.strip().startswith("sampler."):
            raise ValueError(f"sample.py --set takes sampler.* keys only (got {item!r}); the model's configuration "
                             f"comes from its checkpoint")
    return overrides


def output_paths(out: str) -> tuple[Path, Path | None]:
    """(grid path, folder for individual images or None) from --out."""
    path = Path(out)
    if out.endswith(("/", "\\")) or path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        return path / "grid.png", path
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, None


def parse_class(text: str, class_names: list[str]) -> int:
    names = [n.lower() for n in class_names]
    k = int(text) if text.lstrip("-").isdigit() else (names.index(text.lower()) if text.lower() in names else None)
    if k is None or not 0 <= k < len(class_names):
        raise ValueError(f"class {text!r} is not in this model; choose 0..{len(class_names) - 1} or one of: "
                         + ", ".join(class_names))
    return k


def reconstruct(args, device: torch.device) -> None:
    tokenizer, cfg = load_tokenizer(args.ckpt, device)
    images = ImageFolder(args.reconstruct, cfg.data.resolution, split="all")
    grid_path, folder = output_paths(args.out)
    folder = folder or grid_path.parent
    originals, recons, scores = [], [], []
    for i in range(len(images)):
        x = images[i][0][None].to(device)
        rec = tokenizer.decode(tokenizer.encode(x))
        save_image(rec[0], folder / images.files[i].name)
        originals.append(x[0].cpu()), recons.append(rec[0].cpu()), scores.append(psnr(x, rec).item())
    pairs = torch.stack([t for pair in zip(originals, recons) for t in pair])   # original, reconstruction, ...
    save_grid(pairs, grid_path, nrow=8 if len(pairs) >= 8 else len(pairs), scale=4)
    print(f"reconstructed {len(scores)} images into {folder}; side-by-side grid {grid_path}; "
          f"mean PSNR {sum(scores) / len(scores):.2f} dB")


def sample(args, device: torch.device) -> None:
    overrides = sampler_overrides(args)
    model, tokenizer, cfg, class_names = load_generator(args.ckpt, device)
    s = apply_overrides(cfg, overrides).sampler
    if args.cls is None:
        labels = torch.arange(len(class_names)).repeat_interleave(args.n or 8)
    else:
        labels = torch.full((args.n or 16,), parse_class(args.cls, class_names))
    history = [] if args.filmstrip else None
    images = generate(model, tokenizer, labels.to(device), s, args.seed, history)
    grid_path, folder = output_paths(args.out)
    nrow = (args.n or 8) if args.cls is None else None
    save_grid(images, grid_path, nrow=nrow, scale=3)
    if folder is not None:
        for i, image in enumerate(images):
            save_image(image, folder / f"{i:04d}_{class_names[labels[i]].replace(' ', '_')}.png")
    print(f"wrote {len(images)} samples ({s.steps} steps, guidance {s.guidance:g}) to {folder or grid_path}")
    if history is not None:
        frames = [canvas(tokenizer, ids, masked) for ids, masked in history]
        strip = grid_path.with_name(grid_path.stem + "_filmstrip.png")
        save_filmstrip([f[:8] for f in frames], strip)
        print(f"wrote the decoding filmstrip (one column per step) to {strip}")


@torch.no_grad()
def canvas(tokenizer, ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The canvas after a step: the decoded prediction everywhere, darkened where tokens are still masked."""
    images = tokenizer.decode(ids)
    shade = masked[:, None].float().repeat_interleave(tokenizer.f, 2).repeat_interleave(tokenizer.f, 3)
    return images * (1 - 0.6 * shade) - 0.6 * shade


def main(argv=None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    try:
        reconstruct(args, device) if args.reconstruct else sample(args, device)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
