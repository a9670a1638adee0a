"""Model FLOPs utilisation of a generator training step: achieved FLOP/s over this machine's matmul ceiling.

The ceiling is the best fp32 (or bf16) GEMM throughput measured here on large square matrices; the achieved
rate counts the FLOPs a training step must do (PaLM appendix B / nanoGPT's estimate_mfu: 6 per parameter per
token for the matmuls, plus 12 * L * D per token per layer for attention) and divides by the measured step time.

    python benchmarks/mfu.py --preset tiny [--dtype bf16] [--device cuda] [--compile]
    python benchmarks/mfu.py --set generator.local_conv=true     # what the 3x3 convolutions cost per step
    python benchmarks/mfu.py --dtype bf16 --compile --breakdown  # how much of a CPU step the matmuls take

`--breakdown` says how far the step is from the ceiling and why: it profiles the steps (torch.profiler, FLOPs
per GEMM op) and reports the time in matrix multiplies, their own FLOP/s over the ceiling (what the step would
reach if nothing else took time), and where the rest goes (activations, norms, casts, the optimizer). In bf16
on CPU attention runs as two GEMMs and the profiled FLOPs equal the formula's; in fp32 SDPA's kernel does
attention's share outside them.
"""
import argparse
import math
import statistics
import time

import torch
import torch._inductor.config
from torch.profiler import ProfilerActivity, profile

from minimuse.config import apply_overrides
from minimuse.generators import build_generator
from minimuse.generators.maskgit import MaskedTransformer
from minimuse.presets import get_preset
from minimuse.runtime import avoid_cudnn_attention
from minimuse.tokenizer.autoencoder import Autoencoder
from minimuse.train.trainer import make_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n @ n x n GEMM over a few sizes (median of `repeats` each). A GPU needs larger
    matrices than a CPU to reach its peak."""
    best = 0.0
    for n in (512, 1024, 2048) + ((4096, 8192) if device.type == "cuda" else ()):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n ** 3 / statistics.median(times))
    return best


def step_flops(model: MaskedTransformer, batch: int) -> float:
    """FLOPs of one forward + backward: 6 * matmul params * tokens + 12 * depth * L^2 * D * batch (attention);
    the adaLN modulation runs once per example, not per token."""
    matmuls = {name: p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "emb" not in name}
    per_example = sum(n for name, n in matmuls.items() if ".ada." in name)
    tokens = model.prefix + model.seq_len                                 # (the class token) + image tokens
    d, depth = model.cfg.dim, model.cfg.depth
    per_token = sum(matmuls.values()) - per_example
    return 6 * (per_token * tokens + per_example) * batch + 12 * depth * tokens ** 2 * d * batch


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_gemms(step, repeats: int) -> tuple[float, float, list[tuple[str, float]]]:
    """Profile `repeats` CPU steps (torch.profiler, FLOPs counted per op). Returns the seconds a step spends in
    GEMM ops, the FLOPs they do, and the five other ops (or compiled kernels) that take the most time, as
    (name, seconds a step)."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(repeats):
            step()
    events = prof.key_averages()
    gemms = [e for e in events if e.key in GEMM_OPS]
    seconds = sum(e.self_cpu_time_total for e in gemms) / repeats / 1e6           # the profiler counts in us
    rest = sorted((e for e in events if e.key not in GEMM_OPS), key=lambda e: -e.self_cpu_time_total)[:5]
    return seconds, sum(e.flops for e in gemms) / repeats, [(e.key, e.self_cpu_time_total / repeats / 1e6)
                                                              for e in rest]


def make_step(cfg, device: torch.device, dtype: torch.dtype, compile: bool):
    """(model, one training step on random tokens) of the preset's generator, as the trainer runs it: the
    generator's loss (its forward), optionally through torch.compile."""
    torch.manual_seed(0)
    model = build_generator(cfg, Autoencoder(cfg.tokenizer), num_classes=12).to(device)
    side = math.isqrt(model.seq_len)                                      # the token grid is side x side
    net = torch.compile(model) if compile else model
    opt = make_optimizer(model.parameters(), cfg.train_generator)
    batch = cfg.train_generator.batch_size
    ids = torch.randint(0, cfg.tokenizer.codebook_size, (batch, side, side), device=device)
    labels = torch.randint(0, 12, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = net(ids, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="also time the torch.compile'd step, interleaved with "
                   "the eager one (the same noise for both)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--breakdown", action="store_true", help="profile the steps: the matmuls' share of a step "
                   "and their own FLOP/s against the ceiling (CPU only)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.breakdown:
        if device.type != "cpu":
            p.error("--breakdown reads the CPU profiler's op times; on a GPU use torch.profiler's CUDA view")
        torch._inductor.config.cpp.enable_kernel_profile = True           # name the compiled kernels, not one graph
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    avoid_cudnn_attention(device)                                         # as training does
    variants = {"eager": make_step(cfg, device, dtype, compile=False)}
    if args.compile:
        variants["compiled"] = make_step(cfg, device, dtype, compile=True)
    for name, (_, step) in variants.items():
        start = time.perf_counter()
        for _ in range(5):
            step()
        print(f"{name}: first 5 steps {time.perf_counter() - start:.1f} s")
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (_, step) in variants.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    model, batch = variants["eager"][0], cfg.train_generator.batch_size
    flops, ceiling = step_flops(model, batch), matmul_ceiling(device, dtype)
    print(f"{args.preset} generator step on {device} ({args.dtype}, {torch.get_num_threads()} threads): batch {batch}, "
          f"seq {model.seq_len}{'+1' if model.prefix else ''}, dim {cfg.generator.dim}, depth {cfg.generator.depth}, "
          f"{flops / 1e9:.2f} GFLOP/step; matmul ceiling {ceiling / 1e9:.1f} GFLOP/s")
    for name, ts in times.items():
        seconds = statistics.median(ts)
        print(f"  {name:8s} step {seconds * 1e3:.1f} ms (median of {args.repeats}), achieved "
              f"{flops / seconds / 1e9:.1f} GFLOP/s, utilisation {flops / seconds / ceiling:.0%}")
        if args.breakdown:                    # shares of the step timed above: the profiler slows small ops
            gemm_s, gemm_flops, rest = profile_gemms(variants[name][1], args.repeats)
            print(f"    GEMMs: {gemm_s * 1e3:.1f} ms of the step ({gemm_s / seconds:.0%}), {gemm_flops / 1e9:.2f} "
                  f"GFLOP at {gemm_flops / gemm_s / 1e9:.1f} GFLOP/s = {gemm_flops / gemm_s / ceiling:.0%} of the "
                  f"ceiling (what the step would reach if nothing else took time)")
            print("    the most time besides (profiled): " + ", ".join(f"{k[:50]} {t * 1e3:.1f} ms" for k, t in rest))


if __name__ == "__main__":
    main()
