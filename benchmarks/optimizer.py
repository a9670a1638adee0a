"""What one AdamW step costs on the tiny presets' parameters, for each of PyTorch's three implementations.

On CPU PyTorch's default is a Python loop over the parameters ("for-loop"); "foreach" batches them into a few
multi-tensor ops; "fused" does the whole update in one kernel. `train.trainer.make_optimizer` picks fused.

    python benchmarks/optimizer.py [--preset tiny] [--repeats 50]
"""
import argparse
import statistics
import time

import torch

from minimuse.generators import build_generator
from minimuse.presets import get_preset
from minimuse.tokenizer.autoencoder import Autoencoder

IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_ms(params: list[torch.nn.Parameter], options: dict, repeats: int) -> float:
    """Median wall time of one AdamW step (ms) on `params`, whose gradients are already set."""
    opt = torch.optim.AdamW(params, lr=1e-3, **options)
    for _ in range(5):
        opt.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    cfg = get_preset(args.preset)
    tokenizer = Autoencoder(cfg.tokenizer)
    models = {"tokenizer": tokenizer, "generator": build_generator(cfg, tokenizer, num_classes=12)}
    print(f"AdamW step on {args.preset}'s parameters, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, model in models.items():
        params = list(model.parameters())
        for param in params:
            param.grad = torch.randn_like(param)
        times = {impl: step_ms(params, options, args.repeats) for impl, options in IMPLEMENTATIONS.items()}
        print(f"  {name} ({len(params)} tensors, {sum(q.numel() for q in params) / 1e6:.2f} M values): "
              + ", ".join(f"{impl} {ms:.2f} ms" for impl, ms in times.items()))


if __name__ == "__main__":
    main()
