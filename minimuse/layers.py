"""The shared transformer layers every generator is built from: attention, the Block, and its initialisation.

    Block:  [LocalConv]  ->  x + Attn(LN(x))  ->  x + MLP(LN(x))        (pre-norm; adaLN-Zero when conditioned)

MaskGIT's transformer and MAR's encoder and decoder are stacks of the same `Block` (`make_blocks`), so a change
here reaches every generator kind at once, and a new kind starts from blocks that are already tested.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from minimuse.config import GeneratorConfig

# ---------------------------------------------------------------------------------------------------------
# Attention: fused SDPA, except bf16 on CPU at short sequences
# ---------------------------------------------------------------------------------------------------------

# On CPU, SDPA lacks a fast bf16 kernel for short sequences: up to this many keys, a plain softmax(QK^T)V in bf16
# is several times faster (benchmarks/attention.py measures both on the machine at hand). In fp32 SDPA wins at
# every length, and on GPUs SDPA dispatches to flash / memory-efficient kernels and always wins.
CPU_BF16_MATH_ATTENTION_MAX_LEN = 256


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V for q (B, H, Lq, d), k/v (B, H, Lk, d) (Transformer, Vaswani et al. 2017, eq. 1);
    the implementation is picked per device and dtype as said above."""
    causal = causal and q.shape[-2] > 1
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.shape[-2] <= CPU_BF16_MATH_ATTENTION_MAX_LEN):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5              # (B, H, Lq, Lk)
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, L, D), one fused qkv projection."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        assert dim % heads == 0, "dim must be divisible by heads"
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (n h d) -> n b h l d", n=3, h=self.heads)
        out = rearrange(attention(q, k, v, causal), "b h l d -> b l (h d)")
        return self.drop(self.proj(out))


class LocalConv(nn.Module):
    """x + DWConv3x3(LN(x)) over the last side*side tokens read as a grid; earlier (prefix) tokens pass unchanged.

    A locality prior, as the depthwise convolutions inside the blocks of CvT (Wu et al. 2021) and LocalViT
    (Li et al. 2021): attention alone must learn that a token's neighbours matter most, which a small model on a
    short run does slowly. Zero-initialised, so a fresh block computes what the plain one does. Bidirectional
    only: a 3x3 window would let a raster-order model see the next row.
    """

    def __init__(self, dim: int, side: int):
        super().__init__()
        self.side = side
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, grid = x[:, : -self.side ** 2], x[:, -self.side ** 2:]                   # (B, P, D), (B, L, D)
        h = rearrange(self.norm(grid), "b (y x) d -> b d y x", y=self.side)
        return torch.cat([prefix, grid + rearrange(self.conv(h), "b d y x -> b (y x) d")], dim=1)


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN (DiT, Peebles & Xie 2023, §3.2): h * (1 + scale) + shift, so zero modulation is the identity."""
    return h * (1 + scale) + shift


# ---------------------------------------------------------------------------------------------------------
# The Block
# ---------------------------------------------------------------------------------------------------------

class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); with `grid_side`, first a LocalConv.

    With `cond_dim`, a condition vector c (B, cond_dim) modulates both sub-layers, adaLN-Zero (DiT §3.2):
    x + g1 * Attn(LN(x) * (1 + k1) + s1), then the same for the MLP, with (s, k, g) a linear function of c per
    block. The gates g start at zero (`init_weights`), so a fresh block is the identity.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 grid_side: int | None = None, cond_dim: int | None = None):
        super().__init__()
        self.local = LocalConv(dim, grid_side) if grid_side else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim)) if cond_dim else None

    def forward(self, x: torch.Tensor, causal: bool = False, c: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D); c (B, cond_dim), required with adaLN and ignored without."""
        if self.local is not None:
            x = self.local(x)
        if self.ada is None:
            x = x + self.attn(self.norm1(x), causal)
            return x + self.mlp(self.norm2(x))
        s1, k1, g1, s2, k2, g2 = self.ada(c)[:, None].chunk(6, dim=-1)             # (B, 1, D) each
        x = x + g1 * self.attn(modulate(self.norm1(x), s1, k1), causal)
        return x + g2 * self.mlp(modulate(self.norm2(x), s2, k2))


def make_blocks(cfg: GeneratorConfig, depth: int, grid_len: int | None = None) -> nn.ModuleList:
    """`depth` Blocks of the generator's width, with adaLN class modulation if `cfg.class_cond == "adaln"`.

    grid_len: the sequence ends in a square grid of grid_len tokens; with `cfg.local_conv` each block then
    starts with a LocalConv over that grid (the MaskGIT transformer, MAR's decoder; not MAR's encoder).
    """
    side = math.isqrt(grid_len) if cfg.local_conv and grid_len else None
    assert side is None or side * side == grid_len, "local_conv needs a square token grid"
    if cfg.class_cond not in ("adaln", "token"):
        raise ValueError(f"unknown class_cond {cfg.class_cond!r}; choose adaln or token")
    cond_dim = cfg.dim if cfg.class_cond == "adaln" else None
    return nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, side, cond_dim)
                         for _ in range(depth))


def init_weights(module: nn.Module) -> None:
    """GPT-2 / nanoGPT initialisation: N(0, 0.02) for linear and embedding weights, zero biases; a Block's
    adaLN modulation zero (adaLN-Zero). `Module.apply` visits a Block after its layers, so the zeros stay."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, Block) and module.ada is not None:
        nn.init.zeros_(module.ada[1].weight)
        nn.init.zeros_(module.ada[1].bias)
