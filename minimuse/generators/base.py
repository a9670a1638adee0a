"""The generator interface: all that the trainer, the pipeline and the CLIs ever call on a generator.

    model(tokens, cond) -> (loss, logs)          the training loss, as `forward` (so DDP and torch.compile wrap it)
    model.loss(tokens, cond)                      the same, by name
    model.sample(cond, sampler, generator=..., history=..., init_ids=...) -> tokens

tokens: ids (B, h, w) from a VQ tokenizer, or latents (B, h, w, C) from a continuous one; `token_kind` says
which a kind models, so a tokenizer of the wrong kind is refused before training. cond: class ids (B,); each kind
embeds them with a `ClassEmbedding`, whose null class serves classifier-free guidance. logs: scalars for the
progress bar and the CSV log. sampler: a `SamplerConfig`, the one source of every sampling setting.

A kind's constructor takes (GeneratorConfig, token_size, seq_len, num_classes), token_size being the codebook
size for ids or the channels of one latent; `minimuse.generators.GENERATORS` maps `generator.kind` to the class.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class Generator(nn.Module):
    """Base class of every generator kind (see the module docstring for the contract)."""

    token_kind: str                           # "ids" (discrete, VQ) | "latents" (continuous, KL / plain): no default

    def loss(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss and what to log; the same as calling the module."""
        return self(tokens, cond)
