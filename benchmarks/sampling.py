"""Time sampling from a trained run: N images at the run's default steps, tokenizer decode included.

    python benchmarks/sampling.py --ckpt runs/tiny --n 64
    python benchmarks/sampling.py --ckpt runs/tiny-mar --n 64
"""
import argparse
import statistics
import time

import torch

from minimuse.inference import generate, load_generator
from minimuse.runtime import pick_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="default: the run's sampler steps")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default=None)
    args = p.parse_args()
    device = pick_device(args.device)
    model, tokenizer, cfg, class_names = load_generator(args.ckpt, device)
    if args.steps is not None:
        cfg.sampler.steps = args.steps
    labels = torch.arange(args.n, device=device) % len(class_names)
    generate(model, tokenizer, labels, cfg.sampler, seed=0)                     # warm-up
    times = []
    for seed in range(args.repeats):
        start = time.perf_counter()
        generate(model, tokenizer, labels, cfg.sampler, seed=seed)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(f"{cfg.generator.kind}: {args.n} images, {cfg.sampler.steps} steps, guidance {cfg.sampler.guidance:g}, on {device} "
          f"({torch.get_num_threads()} threads): median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, {args.repeats} runs)")


if __name__ == "__main__":
    main()
