"""The masked transformer (MaskGIT, Chang et al. 2022; Muse, Chang et al. 2023) and its training loss.

    ids (B, h, w) in [0, K)  --random cosine mask-->  ids with [MASK] = K  --transformer-->  logits (B, L, K)
    loss = cross-entropy on the masked positions only

Token ids 0..K-1 are the tokenizer's codebook; the one special id, [MASK] = K, sits above it. The class
modulates every block (adaLN-Zero) or enters as a prefix token (see `MaskedTransformer`). The same blocks with `causal=True` give a raster-order
autoregressive model, and MAR (`mar.py`) reuses them over continuous tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from minimuse.config import GeneratorConfig
from minimuse.diffusion import modulate

# ---------------------------------------------------------------------------------------------------------
# Attention: fused SDPA, except bf16 on CPU at short sequences
# ---------------------------------------------------------------------------------------------------------

# Measured with benchmarks/attention.py on a 2-core AVX-512 CPU (docs/benchmarks.md): in fp32, SDPA beat a plain
# softmax(QK^T)V at every length (1.3-3x); in bf16 the plain version was 3-7x faster up to 129 tokens and even at
# 257, because CPU SDPA lacks a fast bf16 kernel for short sequences. On GPUs SDPA dispatches to flash /
# memory-efficient kernels and always wins.
CPU_BF16_MATH_ATTENTION_MAX_LEN = 256


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V for q (B, H, Lq, d), k/v (B, H, Lk, d); the implementation is picked per device
    and dtype as measured above."""
    causal = causal and q.shape[-2] > 1
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.shape[-2] <= CPU_BF16_MATH_ATTENTION_MAX_LEN):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5              # (B, H, Lq, Lk)
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
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
    (Li et al. 2021). On token Shapes it took the masked model from ~40% to 74% in 2000 steps
    (docs/benchmarks.md, "A fifth look"). Zero-initialised, so a fresh block computes what the plain one does.
    Bidirectional only: a 3x3 window would let a raster-order model see the next row.
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


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); with `grid_side`, first a LocalConv.

    With `cond_dim`, a condition vector c (B, cond_dim) modulates both sub-layers, adaLN-Zero (DiT, Peebles &
    Xie 2023, §3.2): x + g1 * Attn(LN(x) * (1 + k1) + s1), then the same for the MLP, with (s, k, g) a linear
    function of c per block. The gates g start at zero (`init_weights`), so a fresh block is the identity.

    Text conditioning (Muse §2.2) adds a cross-attention sub-layer between the two, reading the text encoder's
    output; nothing else in the block changes.
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


# ---------------------------------------------------------------------------------------------------------
# Masking and the loss: small pure functions, pinned by tests
# ---------------------------------------------------------------------------------------------------------


def sample_mask_rates(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Masking rate per example, r = cos(pi/2 * u), u ~ U(0, 1) (Muse §2.5 / MaskGIT §3.2).

    r has density p(r) = 2/pi * (1 - r^2)^(-1/2) on [0, 1], mean 2/pi ~ 0.64: most examples are heavily masked,
    like the early steps of sampling.
    """
    u = torch.rand(batch, generator=generator, device=device)
    return torch.cos(math.pi / 2 * u)


def random_mask(rates: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) rates -> (B, L) bool mask with exactly clamp(ceil(r * L), 1, L) True (= masked) positions per row."""
    n = torch.ceil(rates * length).clamp(1, length).long()                         # (B,)
    noise = torch.rand(len(rates), length, generator=generator, device=rates.device)
    rank = noise.argsort(dim=1).argsort(dim=1)                                    # a random permutation per row
    return rank < n[:, None]


def drop_labels(labels: torch.Tensor, p: float, null_class: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the null class with probability p, so one model learns p(x | c) and p(x)
    for classifier-free guidance (Ho & Salimans 2022; Muse §2.7 uses p = 0.1)."""
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over masked positions only (MaskGIT eq. 1): logits (B, L, K), targets/mask (B, L)."""
    return F.cross_entropy(logits[mask], targets[mask], label_smoothing=label_smoothing)


def masked_generator_loss(model: "MaskedTransformer", tokens: torch.Tensor, labels: torch.Tensor,
                          cond_drop: float, label_smoothing: float = 0.0, net=None):
    """One MaskGIT training objective for token grids (B, h, w) and labels (B,): a cosine-rate mask, the class
    dropped to null with probability cond_drop, cross-entropy on the masked positions. `net` is what to run
    (model wrapped by DDP / torch.compile); default the model. Returns (loss, accuracy on masked positions)."""
    inputs, targets, mask = model.mask_tokens(tokens)                                  # (B, L) each
    logits = (model if net is None else net)(inputs, drop_labels(labels, cond_drop, model.null_class))  # (B, L, K)
    loss = masked_token_loss(logits, targets, mask, label_smoothing)
    accuracy = (logits.argmax(-1) == targets)[mask].float().mean()
    return loss, accuracy


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


class MaskedTransformer(nn.Module):
    """Bidirectional transformer over a token grid, conditioned on a class.

    Conditioning (`cfg.class_cond`): "adaln" (the default) lets the class embedding modulate every block
    (adaLN-Zero, DiT §3.2); "token" prepends it as a token that every position can attend to. DiT found
    adaLN-Zero far ahead of in-context tokens at equal compute, and so did we: on tiny Shapes, 4600 steps
    reached 79-83% attribute accuracy with adaLN against 47-52% with the prefix token (docs/benchmarks.md,
    "A seventh look"), at a cost per step lost in this CPU's timing noise. A caption, a sequence rather than one vector,
    will still enter through cross-attention. Class id `num_classes` is the learned "null" class for
    classifier-free guidance (Muse §2.7).
    """

    def __init__(self, cfg: GeneratorConfig, codebook_size: int, seq_len: int, num_classes: int,
                 causal: bool = False):
        super().__init__()
        self.cfg, self.causal = cfg, causal
        self.codebook_size, self.seq_len, self.num_classes = codebook_size, seq_len, num_classes
        self.mask_id = codebook_size                      # the [MASK] id sits just above the codebook
        self.null_class = num_classes                     # the "no class" id for classifier-free guidance
        assert self.mask_id >= codebook_size and self.null_class >= num_classes
        self.tok_emb = nn.Embedding(codebook_size + 1, cfg.dim)
        self.cls_emb = nn.Embedding(num_classes + 1, cfg.dim)
        self.prefix = int(cfg.class_cond == "token")     # 1: the class also enters as a prefix token
        self.pos_emb = nn.Parameter(torch.zeros(1, self.prefix + seq_len, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)
        assert not (cfg.local_conv and causal), "local_conv would let a raster-order model see the next row"
        self.blocks = make_blocks(cfg, cfg.depth, seq_len)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, codebook_size)
        self.apply(init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ids (B, L) in [0, K] (K = [MASK]), labels (B,) in [0, C] (C = null) -> logits (B, L, K)."""
        c, x = self.cls_emb(labels), self.tok_emb(ids)                                # (B, D), (B, L, D)
        if self.prefix:
            x = torch.cat([c[:, None], x], dim=1)                                     # (B, 1 + L, D)
        x = self.drop(x + self.pos_emb[:, : x.shape[1]])
        for block in self.blocks:
            x = block(x, self.causal, c)
        return self.head(self.norm(x[:, self.prefix:]))                              # (B, L, K)

    def mask_tokens(self, ids: torch.Tensor, generator: torch.Generator | None = None, rate: float | None = None):
        """Training inputs for token grids ids (B, h, w): (inputs, targets, mask), each (B, L).

        A random mask per example, at a cosine-drawn rate (training) or at the fixed `rate` (probes and
        inpainting); masked positions get the [MASK] id, the rest keep their token.
        """
        targets = rearrange(ids, "b h w -> b (h w)")
        rates = (sample_mask_rates(len(targets), generator, ids.device) if rate is None
                 else torch.full((len(targets),), float(rate), device=ids.device))
        mask = random_mask(rates, targets.shape[1], generator)
        inputs = torch.where(mask, torch.full_like(targets, self.mask_id), targets)
        return inputs, targets, mask
