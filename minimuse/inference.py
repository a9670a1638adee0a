"""From a trained run to pictures: load its tokenizer and generator, sample tokens, decode them.

    load_generator(run) -> generator, tokenizer, config, class names
    generate(generator, tokenizer, cond, sampler, seed) -> images (B, 3, H, W) in [-1, 1]

A generator checkpoint holds the tokenizer's weights too, so sampling needs that one file (or its run folder)
and never the training data.
"""
from __future__ import annotations

from pathlib import Path

import torch

from minimuse.checkpoint import load_checkpoint
from minimuse.config import RunConfig, SamplerConfig, from_dict
from minimuse.generators import Generator, build_generator
from minimuse.tokenizer.autoencoder import Autoencoder


def load_tokenizer(path: str | Path, device: torch.device) -> tuple[Autoencoder, RunConfig]:
    """A trained tokenizer in eval mode from a run folder or tokenizer.pt, with the run config it was made with."""
    state = load_checkpoint(path, "tokenizer", map_location=device)
    cfg = from_dict(state["config"])
    model = Autoencoder(cfg.tokenizer).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def load_generator(path: str | Path, device: torch.device) -> tuple[Generator, Autoencoder, RunConfig, list[str]]:
    """(generator, tokenizer, run config, class names) from a run folder or generator.pt, both in eval mode."""
    state = load_checkpoint(path, "generator", map_location=device)
    cfg = from_dict(state["config"])
    tokenizer = Autoencoder(cfg.tokenizer).to(device)
    tokenizer.load_state_dict(state["tokenizer"])
    class_names = state["class_names"]
    model = build_generator(cfg, tokenizer, max(1, len(class_names))).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), tokenizer.eval(), cfg, class_names


@torch.no_grad()
def generate(model: Generator, tokenizer, cond: torch.Tensor, sampler: SamplerConfig, seed: int = 0,
             history: list | None = None, init_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Conditions (B,) -> images (B, 3, H, W) in [-1, 1]: `model.sample` with the settings of `sampler`, then the
    tokenizer's decoder. The same seed gives the same images. history: see `parallel_decode`; init_ids (B, h, w):
    tokens to keep, [MASK] where to generate (inpainting, MaskGIT only)."""
    generator = torch.Generator(cond.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    tokens = model.sample(cond, sampler, generator=generator, history=history, init_ids=init_ids)
    model.train(was_training)
    return tokenizer.decode(tokens)
