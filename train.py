"""Train minimuse: a preset, optional overrides, and the stages to run.

    python train.py --preset tiny                       # tokenizer -> token cache -> generator -> samples
    python train.py --preset tiny --stage tokenizer     # only the VQGAN tokenizer
    python train.py --preset tiny --stage generator     # only the generator, on the run's tokenizer.pt
    python train.py --preset tiny --set tokenizer.codebook_size=1024 --steps 500
    torchrun --nproc_per_node=8 train.py --preset imagenet256 --data /data/imagenet/train
"""
import argparse
import sys

from minimuse.checkpoint import CheckpointError
from minimuse.config import apply_overrides
from minimuse.presets import PRESETS, get_preset
from minimuse.runtime import pick_device
from minimuse.train.pipeline import run_pipeline

STAGES = {"all": ("tokenizer", "generator"), "tokenizer": ("tokenizer",), "generator": ("generator",)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="named configuration (default: tiny)")
    p.add_argument("--stage", default="all", choices=list(STAGES),
                   help="what to train: all (default), tokenizer, or generator (needs the run's tokenizer.pt)")
    p.add_argument("--data", default=None,
                   help="shapes | mnist | fashion-mnist | cifar10 | PATH (image folder or a folder holding the "
                        "dataset's files); default: the preset's dataset")
    p.add_argument("--out", default=None, help="run folder (default: runs/<preset>)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps for each stage that runs")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's, 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda > mps > cpu)")
    p.add_argument("--resume", action="store_true", help="continue each stage from its checkpoint in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set tokenizer.codebook_size=1024 (repeatable); "
                        "an unknown key lists the valid ones")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = get_preset(args.preset)
    if args.data is not None:
        cfg.data.name = args.data
    if args.seed is not None:
        cfg.seed = args.seed
    if args.steps is not None:
        cfg.train_tokenizer.steps = cfg.train_generator.steps = args.steps
    try:
        apply_overrides(cfg, args.overrides)
        run_pipeline(cfg, args.out or f"runs/{args.preset}", STAGES[args.stage], pick_device(args.device),
                     resume=args.resume)
    except (ValueError, FileNotFoundError, CheckpointError, FloatingPointError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
