"""The masked transformer (MaskGIT, Chang et al. 2022; Muse, Chang et al. 2023): generator kind "maskgit".

    ids (B, h, w) in [0, K)  --random cosine mask-->  ids with [MASK] = K  --transformer-->  logits (B, L, K)
    loss = cross-entropy on the masked positions only (MaskGIT eq. 1)
    sample: iterative parallel decoding (`parallel_decode.py`)

Token ids 0..K-1 are the tokenizer's codebook; the one special id, [MASK] = K, sits above it. The class
modulates every block (adaLN-Zero) or enters as a prefix token (see `MaskedTransformer`). The blocks are the
shared `layers.Block`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from minimuse.conditioning import ClassEmbedding, cfg_mix
from minimuse.config import GeneratorConfig, SamplerConfig
from minimuse.generators.base import Generator
from minimuse.generators.parallel_decode import parallel_decode
from minimuse.layers import init_weights, make_blocks
from minimuse.masking import random_mask, sample_mask_rates


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over masked positions only (MaskGIT eq. 1): logits (B, L, K), targets/mask (B, L)."""
    return F.cross_entropy(logits[mask], targets[mask], label_smoothing=label_smoothing)


class MaskedTransformer(Generator):
    """Bidirectional transformer over a token grid, conditioned on a class.

    Conditioning (`cfg.class_cond`): "adaln" (the default) lets the class embedding modulate every block
    (adaLN-Zero, DiT §3.2); "token" prepends it as a token that every position can attend to. DiT found
    adaLN-Zero far ahead of in-context tokens at equal compute, and so does this model on Shapes, at no visible
    cost per step. Class id `num_classes` is the learned null class for classifier-free guidance (Muse §2.7).

    `causal=True` turns the same network into a raster-order model (research/token_shapes.py compares the two);
    the "maskgit" kind is always bidirectional.
    """

    token_kind = "ids"

    def __init__(self, cfg: GeneratorConfig, codebook_size: int, seq_len: int, num_classes: int,
                 causal: bool = False):
        super().__init__()
        self.cfg, self.causal = cfg, causal
        self.codebook_size, self.seq_len, self.num_classes = codebook_size, seq_len, num_classes
        self.mask_id = codebook_size                      # the [MASK] id sits just above the codebook
        self.tok_emb = nn.Embedding(codebook_size + 1, cfg.dim)
        self.cls_emb = ClassEmbedding(num_classes, cfg.dim, cfg.cond_drop)
        self.null_class = self.cls_emb.null_class         # the "no class" id for classifier-free guidance
        assert self.mask_id >= codebook_size and self.null_class >= num_classes
        self.prefix = int(cfg.class_cond == "token")     # 1: the class also enters as a prefix token
        self.pos_emb = nn.Parameter(torch.zeros(1, self.prefix + seq_len, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)
        assert not (cfg.local_conv and causal), "local_conv would let a raster-order model see the next row"
        self.blocks = make_blocks(cfg, cfg.depth, seq_len)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, codebook_size)
        self.apply(init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)

    def logits(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ids (B, L) in [0, K] (K = [MASK]), labels (B,) in [0, C] (C = null) -> logits (B, L, K)."""
        c, x = self.cls_emb(labels), self.tok_emb(ids)                                # (B, D), (B, L, D)
        if self.prefix:
            x = torch.cat([c[:, None], x], dim=1)                                     # (B, 1 + L, D)
        x = self.drop(x + self.pos_emb[:, : x.shape[1]])
        for block in self.blocks:
            x = block(x, self.causal, c)
        return self.head(self.norm(x[:, self.prefix:]))                              # (B, L, K)

    # -------------------------------------------------------------------------------------------------
    # Training
    # -------------------------------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training loss for token grids (B, h, w) and labels (B,): a cosine-rate mask per example, the class
        dropped to null with probability cfg.cond_drop, cross-entropy on the masked positions. Logs the loss and
        the accuracy of the argmax on the masked positions."""
        inputs, targets, mask = self.mask_tokens(tokens)                                  # (B, L) each
        logits = self.logits(inputs, self.cls_emb.drop(labels))                          # (B, L, K)
        loss = masked_token_loss(logits, targets, mask, self.cfg.label_smoothing)
        accuracy = (logits.argmax(-1) == targets)[mask].float().mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}

    def mask_tokens(self, ids: torch.Tensor, generator: torch.Generator | None = None, rate: float | None = None):
        """Training inputs for token grids ids (B, h, w): (inputs, targets, mask), each (B, L).

        A random mask per example, at a cosine-drawn rate (training) or at the fixed `rate` (probes); masked
        positions get the [MASK] id, the rest keep their token.
        """
        targets = rearrange(ids, "b h w -> b (h w)")
        rates = (sample_mask_rates(len(targets), generator, ids.device) if rate is None
                 else torch.full((len(targets),), float(rate), device=ids.device))
        mask = random_mask(rates, targets.shape[1], generator)
        inputs = torch.where(mask, torch.full_like(targets, self.mask_id), targets)
        return inputs, targets, mask

    # -------------------------------------------------------------------------------------------------
    # Sampling
    # -------------------------------------------------------------------------------------------------

    def guided_logits(self, ids: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
        """fp32 logits (B, L, K) for ids (B, L), mixed with the null class's by `cfg_mix` when scale != 0; the
        conditional and unconditional passes run as one batched forward."""
        if scale == 0:
            return self.logits(ids, labels).float()
        cond, uncond = self.logits(ids.repeat(2, 1), torch.cat([labels, torch.full_like(labels, self.null_class)])).float().chunk(2)
        return cfg_mix(cond, uncond, scale)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, sampler: SamplerConfig, *, generator: torch.Generator | None = None,
               history: list | None = None, init_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token grids (B, h, w) for labels (B,) by parallel decoding. init_ids (B, h, w), optional: tokens to
        keep, with `mask_id` where to generate (inpainting); default: everything masked."""
        if init_ids is None:
            side = math.isqrt(self.seq_len)
            init_ids = torch.full((len(labels), side, side), self.mask_id, device=labels.device)
        return parallel_decode(lambda ids, scale: self.guided_logits(ids, labels, scale), init_ids, self.mask_id,
                               sampler, generator=generator, history=history)
