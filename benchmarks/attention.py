"""Which attention implementation is faster here: F.scaled_dot_product_attention or plain softmax(QK^T)V?

`layers.attention` uses the plain version for bf16 on CPU up to CPU_BF16_MATH_ATTENTION_MAX_LEN tokens and
SDPA otherwise (always on GPUs, where SDPA dispatches to flash/memory-efficient kernels; training leaves cuDNN's
out, `runtime.avoid_cudnn_attention`, and so does this script). This script prints the forward+backward time of
both at the sequence lengths our presets use, so the rule can be checked on the machine at hand.

    python benchmarks/attention.py [--device cpu|cuda] [--dtype fp32|bf16]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from minimuse.layers import CPU_BF16_MATH_ATTENTION_MAX_LEN
from minimuse.runtime import avoid_cudnn_attention


def math_attention(q, k, v):
    return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1) @ v


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def time_fwd_bwd(fn, q, k, v, repeats: int = 30) -> float:
    """Median seconds of forward + backward, after a warm-up."""
    times = []
    for i in range(repeats + 5):
        for t in (q, k, v):
            t.grad = None
        start = time.perf_counter()
        fn(q, k, v).sum().backward()
        if q.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=48)
    args = p.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    avoid_cudnn_attention(torch.device(args.device))                     # as training does
    print(f"device {args.device}, {args.dtype}, batch {args.batch}, {args.heads} heads of {args.head_dim}; "
          f"threads {torch.get_num_threads()}; CPU_BF16_MATH_ATTENTION_MAX_LEN = {CPU_BF16_MATH_ATTENTION_MAX_LEN}")
    print(f"{'seq':>5} {'math ms':>9} {'sdpa ms':>9} {'sdpa/math':>10}  faster")
    for seq in (17, 65, 129, 257, 1025):                 # 4x4, 8x8, 16x16, 32x32 grids + a class token
        shape = (args.batch, args.heads, seq, args.head_dim)
        q, k, v = (torch.randn(shape, device=args.device, dtype=dtype, requires_grad=True) for _ in range(3))
        t_math, t_sdpa = time_fwd_bwd(math_attention, q, k, v), time_fwd_bwd(sdpa, q, k, v)
        print(f"{seq:>5} {t_math * 1e3:>9.2f} {t_sdpa * 1e3:>9.2f} {t_sdpa / t_math:>10.2f}  "
              f"{'math' if t_math < t_sdpa else 'sdpa'}")


if __name__ == "__main__":
    main()
