"""What glibc giving freed memory back to the OS costs a CPU step: a setting measured, and not adopted.

    python benchmarks/freed_memory.py                      # tiny's tokenizer and generator training steps
    python benchmarks/freed_memory.py --ckpt runs/tiny     # and sampling 64 images from a trained run

A profile of the tiny generator step shows thousands of minor page faults a step: glibc's malloc hands large
freed blocks back to the kernel, which zero-fills every 4 KiB page when the next step touches them again.
`keep_freed_memory` (below) stops that, as the tcmalloc or jemalloc that CPU tuning guides preload would.
The setting is process-wide and cannot be undone, so every measurement is a fresh process: each workload runs
`--rounds` times with glibc's default malloc and as many with the setting, the two alternating so that both
see the same machine. A process warms up, times `--steps` steps and counts its minor page faults
(getrusage). Prints, each way, the median step time and the page faults per step. Linux (glibc) only.
"""
import argparse
import ctypes
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from mfu import make_step
from minimuse.config import get_preset
from minimuse.sampler import generate
from minimuse.stages import TokenizerStage, load_generator
from minimuse.trainer import autocast_dtype, can_compile, make_optimizer

CPU = torch.device("cpu")


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of giving it back to the OS; True where it took effect.

    The largest mmap threshold glibc accepts (32 MiB on 64-bit; larger blocks are still mapped) and no trimming
    of the heap's free top: the process keeps its peak heap. glibc's default raises its mmap threshold on its
    own as blocks are freed, which is why it faults far less than a fixed threshold would.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):                                      # not glibc
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3                            # from glibc's <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def tokenizer_step(ckpt):
    """One tiny tokenizer training step on random images: losses, backward, clipping, AdamW, as `fit` runs it."""
    cfg = get_preset("tiny")
    images = torch.rand(cfg.train_tokenizer.batch_size, 3, 32, 32) * 2 - 1
    stage = TokenizerStage(cfg, CPU, images[:4])
    params = stage.param_groups()
    optimizers = {name: make_optimizer(p, cfg.train_tokenizer) for name, p in params.items()}

    def step() -> None:
        losses, _ = stage.losses((images,), step=0)
        for name, loss in losses.items():
            loss.backward(inputs=params[name])
            torch.nn.utils.clip_grad_norm_(params[name], cfg.train_tokenizer.grad_clip)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def generator_step(ckpt):
    """One tiny generator training step on random tokens, in the precision and compiled as the preset trains."""
    cfg = get_preset("tiny")
    dtype = autocast_dtype(CPU, cfg.train_generator.precision) or torch.float32
    return make_step(cfg, CPU, dtype, compile=cfg.train_generator.compile and can_compile(CPU))[1]


def sampling_step(ckpt):
    """64 images from the run at `ckpt` with its own sampler, tokenizer decode included (benchmarks/sampling.py)."""
    if ckpt is None:
        return None
    model, tokenizer, cfg, class_names = load_generator(ckpt, CPU)
    labels = torch.arange(64) % len(class_names)
    return lambda: generate(model, tokenizer, labels, cfg.sampler, seed=0)


WORKLOADS = {"tokenizer": tokenizer_step, "generator": generator_step, "sampling": sampling_step}


def measure(workload: str, keep: bool, steps: int, ckpt) -> dict:
    """In this process: warm up, then the median seconds of `steps` steps and the minor page faults per step."""
    if keep and not keep_freed_memory():
        sys.exit("keep_freed_memory had no effect here (it needs Linux with glibc)")
    torch.manual_seed(0)
    step = WORKLOADS[workload](ckpt)
    for _ in range(5):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"seconds": statistics.median(times), "faults": faults / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="a trained run: also time sampling 64 images from it")
    p.add_argument("--rounds", type=int, default=3, help="processes each way, per workload")
    p.add_argument("--steps", type=int, default=20, help="timed steps per process")
    p.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:                                                       # one measurement, as a JSON line
        print(json.dumps(measure(args.child, args.keep, args.steps, args.ckpt)))
        return
    workloads = [w for w in WORKLOADS if w != "sampling" or args.ckpt]
    print(f"{torch.get_num_threads()} threads; {args.rounds} processes each way, {args.steps} steps each")
    for workload in workloads:
        results = {False: [], True: []}
        for _ in range(args.rounds):
            for keep in (False, True):
                cmd = [sys.executable, __file__, "--child", workload, "--steps", str(args.steps)]
                cmd += ["--keep"] * keep + (["--ckpt", args.ckpt] if args.ckpt else [])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results[keep].append(json.loads(out.strip().splitlines()[-1]))
        ms = {}
        for keep, rs in results.items():
            ms[keep] = statistics.median(r["seconds"] for r in rs) * 1e3
            each = ", ".join(f"{r['seconds'] * 1e3:.0f}" for r in rs)
            faults = statistics.median(r["faults"] for r in rs)
            print(f"  {workload:9s} {'keep_freed_memory' if keep else 'glibc default':17s} {ms[keep]:7.1f} ms a step "
                  f"(the processes: {each}), {faults:,.0f} page faults a step")
        print(f"  {workload:9s} speed-up {ms[False] / ms[True]:.2f}x")


if __name__ == "__main__":
    main()
