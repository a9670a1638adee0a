"""benchmarks/mfu.py: the FLOP formula a utilisation is divided by agrees with what the profiler counts."""
import torch

from benchmarks.mfu import make_step, profile_gemms, step_flops
from minimuse.config import apply_overrides
from minimuse.presets import get_preset


def test_step_flops_equal_the_gemm_flops_the_profiler_counts():
    # bf16 on CPU runs attention as two batched matmuls (layers.attention), so every FLOP of the
    # formula is a GEMM op's: the formula's 6 * params * tokens and its attention term are checked at once.
    cfg = apply_overrides(get_preset("tiny"), ["generator.dim=32", "generator.depth=2", "generator.heads=2",
                                               "train_generator.batch_size=4"])
    model, step = make_step(cfg, torch.device("cpu"), torch.bfloat16, compile=False)
    seconds, flops, rest = profile_gemms(step, repeats=2)
    assert flops == step_flops(model, batch=4)
    assert seconds > 0 and len(rest) == 5 and all(t >= 0 for _, t in rest)
