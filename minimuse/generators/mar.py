"""MAR: masked generation over continuous tokens with a per-token diffusion head: generator kind "mar".

Li, Tian, Li, Deng & He 2024, "Autoregressive Image Generation without Vector Quantization". The tokenizer
gives continuous latents (B, h, w, C) instead of ids, so there is no softmax: the transformer produces a
condition vector z for every token and the diffusion MLP head (`diffusion.py`) models p(x | z).

    tokens (B, L, C) --random order, mask most--> MAE encoder over [buffer tokens + visible tokens]
                     --> MAE decoder over all positions (mask embeddings re-inserted) --> z (B, L, D)
                     --> diffusion loss on the masked tokens (MAR §3.2, eq. 2)

The transformer blocks are the shared `layers.Block`. The class conditions the model through the buffer tokens:
every buffer position holds the class embedding (MAR §5.1), and with `class_cond="adaln"` it also modulates every
encoder and decoder block (adaLN-Zero, as in the MaskGIT model). The learned null class stands in for it with
probability cfg.cond_drop (classifier-free guidance).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange

from minimuse.conditioning import ClassEmbedding, guidance_at
from minimuse.config import GeneratorConfig, SamplerConfig
from minimuse.generators.base import Generator
from minimuse.generators.diffusion import DiffusionHead
from minimuse.layers import init_weights, make_blocks
from minimuse.masking import mask_by_order, num_masked_after, random_orders, sample_mask_ratio


class MAR(Generator):
    """MAE-style encoder/decoder over continuous tokens, conditioned through buffer tokens, with a diffusion head."""

    token_kind = "latents"

    def __init__(self, cfg: GeneratorConfig, token_dim: int, seq_len: int, num_classes: int):
        super().__init__()
        self.cfg, self.token_dim, self.seq_len, self.num_classes = cfg, token_dim, seq_len, num_classes
        n, d = cfg.buffer_tokens, cfg.dim
        self.token_proj = nn.Linear(token_dim, d)
        self.cls_emb = ClassEmbedding(num_classes, d, cfg.cond_drop)
        self.null_class = self.cls_emb.null_class
        self.enc_pos = nn.Parameter(torch.zeros(1, n + seq_len, d))
        self.encoder = make_blocks(cfg, cfg.depth)
        self.enc_norm = nn.LayerNorm(d)
        self.mask_emb = nn.Parameter(torch.zeros(1, 1, d))
        self.dec_pos = nn.Parameter(torch.zeros(1, n + seq_len, d))
        self.decoder = make_blocks(cfg, cfg.decoder_depth, seq_len)       # the decoder alone sees the full grid
        self.dec_norm = nn.LayerNorm(d)
        self.head_pos = nn.Parameter(torch.zeros(1, seq_len, d))          # position info for the diffusion head
        self.apply(init_weights)
        for p in (self.enc_pos, self.mask_emb, self.dec_pos, self.head_pos):
            nn.init.normal_(p, std=0.02)
        h = cfg.head
        self.head = DiffusionHead(token_dim, d, width=h.width, depth=h.depth, num_sample_steps=h.sample_steps,
                                  batch_mul=h.batch_mul)

    # -------------------------------------------------------------------------------------------------
    def encode(self, tokens: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, C), mask (B, L) True = masked, the same count in every row; labels (B,).

        Returns (B, buffer + visible, D): the encoder sees the buffer tokens and the visible tokens only.
        """
        b, n = len(tokens), self.cfg.buffer_tokens
        c = self.cls_emb(labels)                                              # (B, D)
        buffer = c[:, None].expand(b, n, -1)                                  # (B, n, D)
        x = torch.cat([buffer, self.token_proj(tokens)], dim=1) + self.enc_pos
        keep = torch.cat([mask.new_ones(b, n), ~mask], dim=1)                 # (B, n + L)
        x = x[keep].reshape(b, -1, x.shape[-1])                               # drop the masked positions
        for block in self.encoder:
            x = block(x, c=c)
        return self.enc_norm(x)

    def decode(self, x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, n + visible, D) -> condition vectors z (B, L, D) for every token position."""
        b, n = len(x), self.cfg.buffer_tokens
        keep = torch.cat([mask.new_ones(b, n), ~mask], dim=1)                 # (B, n + L)
        full = self.mask_emb.to(x.dtype).expand(b, keep.shape[1], -1).clone()
        full[keep] = x.reshape(-1, x.shape[-1])                               # mask embeddings where masked
        full = full + self.dec_pos
        c = self.cls_emb(labels)                                              # (B, D), for adaLN
        for block in self.decoder:
            full = block(full, c=c)
        return self.dec_norm(full)[:, n:] + self.head_pos

    def conditions(self, tokens: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (B, L, D) for tokens (B, L, C) with `mask` (B, L) hidden, given labels (B,): encoder, then decoder."""
        return self.decode(self.encode(tokens, mask, labels), mask, labels)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training loss for tokens (B, h, w, C) and labels (B,): one mask ratio per batch, a random order per
        example, and the diffusion loss on the masked tokens only."""
        x = rearrange(tokens, "b h w c -> b (h w) c")
        b, length = x.shape[:2]
        num_masked = math.ceil(length * sample_mask_ratio(self.cfg.mask_ratio_min))
        orders = random_orders(b, length, device=x.device)
        mask = mask_by_order(orders, torch.full((b,), num_masked, device=x.device))
        z = self.conditions(x, mask, self.cls_emb.drop(labels))
        loss = self.head.loss(x[mask], z[mask])
        return loss, {"loss": loss.detach()}

    # -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, labels: torch.Tensor, sampler: SamplerConfig, *, generator: torch.Generator | None = None,
               history: list | None = None, init_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Generate tokens (B, h, w, C) in sampler.steps iterations (MAR §3.3): at each step, predict z for all
        positions and let the diffusion head sample the tokens next in each row's random order; the number still
        masked follows the same schedule as MaskGIT. Guidance runs cond and null rows in one batch, with the
        scale ramped by step index (`guidance_at`, which says how MAR's own ramp differs); sampler.temperature
        is the head's noise temperature."""
        if init_ids is not None:
            raise ValueError("inpainting from init_ids needs a MaskGIT generator, not MAR")
        b, length, side, steps = len(labels), self.seq_len, math.isqrt(self.seq_len), sampler.steps
        tokens = torch.zeros(b, length, self.token_dim, device=labels.device)
        mask = torch.ones(b, length, dtype=torch.bool, device=labels.device)
        orders = random_orders(b, length, generator, labels.device)
        total = torch.full((b,), length, device=labels.device)
        null = torch.full_like(labels, self.null_class)
        for t in range(steps):
            s = guidance_at(t, steps, sampler.guidance, sampler.guidance_schedule)
            rows = 2 if s != 0 else 1                                         # cond (and null) rows, one batch
            z = self.conditions(tokens.repeat(rows, 1, 1), mask.repeat(rows, 1), torch.cat([labels, null][:rows]))
            next_mask = mask_by_order(orders, num_masked_after(t, steps, total, mask.sum(dim=1), sampler.schedule))
            reveal = mask & ~next_mask                                        # (B, L) tokens decided now
            if reveal.any():                                                  # (not when steps > tokens)
                z_cond, z_null = [part[reveal] for part in z.chunk(rows)] + [None] * (2 - rows)   # (N, D) each
                tokens[reveal] = self.head.sample(z_cond, sampler.temperature, s, generator,
                                                  z_uncond=z_null).to(tokens.dtype)
            mask = next_mask
            if history is not None:
                history.append((rearrange(tokens.clone(), "b (h w) c -> b h w c", h=side),
                                rearrange(mask, "b (h w) -> b h w", h=side)))
        return rearrange(tokens, "b (h w) c -> b h w c", h=side)
