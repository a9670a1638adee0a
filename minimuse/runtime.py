"""Where and how code runs: the device, the precision, torch.compile, DDP and seeding, each chosen in one place.

Nothing here knows a model. The trainer, the CLIs and the benchmarks ask these functions, so "cuda > mps > cpu",
"bf16 where it is fast" and "compile where a compiler exists" are decided the same way everywhere.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP


def pick_device(name: str | None = None) -> torch.device:
    """cuda > mps > cpu unless `name` says otherwise. Under torchrun each process takes its LOCAL_RANK GPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------------------

def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), as torch reports them.

    With them a small transformer step runs markedly faster under bf16 autocast; where bf16 is emulated it runs
    slower than fp32. A feature check rather than a timing: a timing probe (a matmul in both precisions) varies
    too much from process to process to decide a run's precision. A torch without these checks answers False.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast where the device runs it fast. "auto": bf16 on CUDA GPUs that support it and on CPUs with
    bf16 matrix instructions (`cpu_has_bf16_matmul`); fp32 (None) elsewhere."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16_matmul() else None
    raise ValueError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The autocast context for `autocast_dtype`'s answer: bf16 autocast, or a no-op for None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def avoid_cudnn_attention(device: torch.device) -> None:
    """Take cuDNN's fused attention out of `F.scaled_dot_product_attention`'s choices on CUDA, for training.

    Its bf16 backward has been reported to return NaN gradients on Hopper GPUs (pytorch/pytorch#196678), and
    the tiny generator's gradients did turn NaN with it; flash attention in its place trains clean."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


# ---------------------------------------------------------------------------------------------------------
# Compilation and multi-process training
# ---------------------------------------------------------------------------------------------------------

def can_compile(device: torch.device) -> bool:
    """Whether `torch.compile` can run here: on CUDA always (Triton); on CPU, Inductor writes C++ and needs a C++
    compiler (g++ or clang++; cl on Windows), which a laptop may lack; elsewhere (MPS...) it is not used."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    from torch._inductor.cpp_builder import get_cpp_compiler          # Inductor's own search
    try:
        get_cpp_compiler()
    except Exception:
        return False
    return True


def setup_distributed() -> tuple[int, int]:
    """(rank, world_size). Under `torchrun` (WORLD_SIZE > 1) this joins the process group: NCCL on GPUs,
    gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return (dist.get_rank() if world > 1 else 0), world


def wrap(module: nn.Module, ddp: bool, compile: bool) -> nn.Module:
    """The callable a stage trains through: DDP for multi-process runs, then torch.compile when asked."""
    net = DDP(module) if ddp else module
    return torch.compile(net) if compile else net


# ---------------------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global torch RNG state(s) of this process: what the models draw masks, noise and dropout from."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def all_rng_states() -> list[dict]:
    """`rng_state()` of every process, rank by rank (one entry without DDP); every process must call it."""
    state = rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
