"""Named presets: one function per recipe, each returning a fresh `RunConfig`.

A preset's docstring says what it is for and why each non-default choice was made, in a clause each; the
measurements behind the choices are in docs/design-notes.md and their current figures in docs/results.md.
"""
from __future__ import annotations

from typing import Callable

from minimuse.config import (DataConfig, DiffusionHeadConfig, GeneratorConfig, RunConfig, SamplerConfig,
                             TokenizerConfig, TrainConfig)


def tiny() -> RunConfig:
    """Shapes 32x32 -> 8x8 tokens, both stages on a 2-core laptop CPU in minutes.

    Tokenizer: a narrow full-resolution level so many small-batch steps fit the time, and no GAN (too short a
    run for it to pay back its cost). Generator: a 3x3 depthwise conv in every block (the locality prior Shapes
    needs), no label smoothing (a small codebook of flat colours), a higher learning rate, and compiled. Sampler:
    top-k 10, a lower choice temperature and guidance 1.5 (more would oversize the squares).
    """
    return RunConfig(
        preset="tiny",
        tokenizer=TokenizerConfig(channels=16, channel_mult=(1, 2, 4), latent_dim=32, codebook_size=256,
                                  disc_start=None),
        generator=GeneratorConfig(dim=128, depth=4, heads=4, local_conv=True, label_smoothing=0.0,
                                  head=DiffusionHeadConfig(width=128)),
        train_tokenizer=TrainConfig(steps=6000, batch_size=16, lr=1e-3, warmup=100, sample_every=1000,
                                    ckpt_every=1000, precision="fp32"),
        sampler=SamplerConfig(top_k=10, choice_temperature=2.5, guidance=1.5),
        train_generator=TrainConfig(steps=5500, batch_size=64, lr=2e-3, warmup=100, weight_decay=0.05,
                                    betas=(0.9, 0.95), sample_every=500, compile=True),
    )


def tiny_mar() -> RunConfig:
    """tiny with a continuous KL tokenizer and a MAR generator with a diffusion MLP head.

    The tokenizer gives up steps so both stages fit the time; the 3x3 conv sits in MAR's decoder blocks (its
    encoder sees no grid); a higher learning rate gets the generator reading the class sooner; guidance ramps to
    8 because the diffusion head alone samples close to the marginal; MAR is not compiled (its masked count is
    drawn per batch, a new graph each step).
    """
    cfg = tiny()
    cfg.preset = "tiny-mar"
    cfg.tokenizer.bottleneck = "kl"
    cfg.generator = GeneratorConfig(kind="mar", dim=128, depth=3, decoder_depth=2, heads=4, local_conv=True,
                                    head=DiffusionHeadConfig(width=128))
    cfg.sampler = SamplerConfig(steps=16, temperature=1.0, guidance=8.0, guidance_schedule="linear")
    cfg.train_tokenizer.steps = 4500
    cfg.train_generator.steps = 2000           # a MAR step costs more: 4 diffusion draws per masked token
    cfg.train_generator.lr = 3e-3
    cfg.train_generator.compile = False
    return cfg


def cifar10() -> RunConfig:
    """CIFAR-10 32x32 on one GPU: 8x8 tokens, a bigger codebook, GAN, EMA weights, compiled, bf16."""
    return RunConfig(
        preset="cifar10",
        data=DataConfig(name="cifar10"),
        tokenizer=TokenizerConfig(channels=128, channel_mult=(1, 2, 2), latent_dim=128, codebook_size=1024,
                                  disc_start=20_000),
        generator=GeneratorConfig(dim=512, depth=8, heads=8, dropout=0.1),
        train_tokenizer=TrainConfig(steps=100_000, batch_size=128, lr=2e-4, compile=True),
        train_generator=TrainConfig(steps=200_000, batch_size=256, lr=4e-4, warmup=2000, weight_decay=0.05,
                                    betas=(0.9, 0.96), ema_decay=0.9999, compile=True,
                                    sample_every=5000, ckpt_every=5000),
    )


def imagenet(resolution: int) -> RunConfig:
    """ImageNet-style folder at 256 or 512: an f=16 tokenizer (16x16 or 32x32 tokens) and a MaskGIT-base-sized
    transformer (24 x 768, 16 heads) with MaskGIT's optimiser settings; more steps at 512 for more tokens."""
    return RunConfig(
        preset=f"imagenet{resolution}",
        data=DataConfig(name="imagenet", resolution=resolution),
        tokenizer=TokenizerConfig(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attention=True,
                                  latent_dim=256, codebook_size=16384, disc_start=20_000, disc_weight=0.8),
        generator=GeneratorConfig(dim=768, depth=24, heads=16, dropout=0.1, buffer_tokens=64),
        sampler=SamplerConfig(steps=12 if resolution == 256 else 16),
        train_tokenizer=TrainConfig(steps=500_000, batch_size=64, lr=1e-4, betas=(0.5, 0.9), compile=True,
                                    sample_every=5000, ckpt_every=5000),
        train_generator=TrainConfig(steps=1_000_000, batch_size=256, lr=1e-4, warmup=5000, weight_decay=0.045,
                                    betas=(0.9, 0.96), ema_decay=0.9999, compile=True,
                                    sample_every=10_000, ckpt_every=10_000),
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "tiny": tiny,
    "tiny-mar": tiny_mar,
    "cifar10": cifar10,
    "imagenet256": lambda: imagenet(256),
    "imagenet512": lambda: imagenet(512),
}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
