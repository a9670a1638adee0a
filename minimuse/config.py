"""Configs: one dataclass per component, `--set a.b=value` overrides, and the dict form checkpoints store.

Every default lives here and only here (CONTRIBUTING.md, "one source of truth"). Model code receives plain values
from these dataclasses and never asks which preset it is in; the presets themselves are in `presets.py`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field


@dataclass
class DataConfig:
    name: str = "shapes"                 # shapes | mnist | fashion-mnist | cifar10 | PATH (image folder or dataset files)
    resolution: int = 32                 # images are (3, R, R)
    train_size: int | None = None        # None: the whole train split (Shapes: 50,000)
    holdout_size: int = 1000             # held-out images for evaluation (at most what the split holds)
    root: str | None = None              # download/cache folder (None: ~/.cache/minimuse)


@dataclass
class TokenizerConfig:
    """The autoencoder that turns images into tokens (VQGAN, Esser et al. 2021) and its swappable bottleneck."""
    channels: int = 64                   # width of the first encoder level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per level; downsampling f = 2 ** (levels - 1)
    num_res_blocks: int = 1              # residual blocks per level
    attention: bool = False              # self-attention at the lowest resolution
    latent_dim: int = 64                 # channels between encoder/decoder and the bottleneck
    encoder_padding: str = "zeros"       # zeros | replicate (a flat region -> one code at every position)
    bottleneck: str = "vq"               # vq (discrete ids) | kl | plain (continuous latents, for MAR)
    # vector quantiser (VQ-VAE, ViT-VQGAN)
    codebook_size: int = 512
    code_dim: int | None = 8             # factorised low-dim lookup; None: look up in latent_dim
    l2_norm: bool = True                 # cosine-similarity lookup on the unit sphere
    beta: float = 0.25                   # commitment weight
    ema: bool = False                    # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99
    restart_dead: bool = True            # re-initialise unused codes from the batch's encodings
    # continuous bottleneck (MAR uses a KL-16 tokenizer)
    token_dim: int = 16                  # channels of a continuous token
    kl_weight: float = 1e-6              # per-latent units: see tokenizer/continuous.py
    # losses
    rec_loss: str = "l1"                 # l1 | l2
    lpips_weights: str | None = None     # LPIPS weights file (scripts/convert_lpips.py); None: no perceptual loss
    perceptual_weight: float = 1.0
    disc_start: int | None = 1000        # step at which the PatchGAN loss switches on; None: no GAN at all
    disc_weight: float = 0.5             # multiplies the adaptive weight
    disc_channels: int = 64
    disc_layers: int = 3


@dataclass
class DiffusionHeadConfig:
    """MAR's per-token diffusion MLP (Li et al. 2024, §3.2); MAR itself uses width 1024, depth 3."""
    width: int = 256
    depth: int = 3
    batch_mul: int = 4                   # noise draws per token per training step (MAR's diffusion_batch_mul)
    sample_steps: int = 100              # respaced reverse steps when sampling


@dataclass
class GeneratorConfig:
    """A generator over the tokenizer's grid: kind maskgit (MaskGIT / Muse) or mar (Li et al. 2024)."""
    kind: str = "maskgit"                # a key of minimuse.generators.GENERATORS
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    cond_drop: float = 0.1               # classifier-free guidance: P(class -> null class) in training (Muse §2.7)
    label_smoothing: float = 0.1
    local_conv: bool = False             # a depthwise 3x3 conv over the token grid in every block (MAR: decoder)
    class_cond: str = "adaln"            # adaln (adaLN-Zero in every block, DiT) | token (prefix / MAR buffer only)
    # MAR only
    decoder_depth: int = 2               # MAE-style decoder blocks after the encoder
    buffer_tokens: int = 4               # 64 in the paper; fewer for short sequences
    mask_ratio_min: float = 0.7          # truncated normal on [min, 1], centred at 1 with std 0.25
    head: DiffusionHeadConfig = field(default_factory=DiffusionHeadConfig)


@dataclass
class SamplerConfig:
    steps: int = 8                       # forward passes (MaskGIT/Muse) or iterations (MAR)
    schedule: str = "cosine"             # fraction still masked after step t: cosine | linear | sqrt | square | cubic
    temperature: float = 1.0             # token sampling temperature (MAR: diffusion noise temperature)
    choice_temperature: float = 4.5      # Gumbel noise on confidences, annealed linearly to 0
    guidance: float = 2.0                # classifier-free guidance scale s in (1 + s) * cond - s * uncond
    guidance_schedule: str = "linear"    # linear (ramp 0 -> s over the steps) | constant
    top_k: int = 0                       # 0: sample from the full distribution


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32                 # global: under torchrun each of N processes takes batch_size / N
    lr: float = 2e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1            # cosine decay to lr * min_lr_ratio
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.0               # 0: no EMA of the weights
    precision: str = "auto"              # auto (bf16 where fast: CUDA, CPUs with bf16 matmuls) | fp32 | bf16
    compile: bool = False
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 500


@dataclass
class RunConfig:
    preset: str = "tiny"
    seed: int = 0
    eval_per_class: int = 32             # samples per class in the final grid and accuracy report
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train_tokenizer: TrainConfig = field(default_factory=TrainConfig)
    train_generator: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------------------
# Renamed fields: old checkpoints and old `--set` keys keep working
# ---------------------------------------------------------------------------------------------------------

RENAMED = {
    "sampler.cfg": "sampler.guidance",
    "sampler.cfg_schedule": "sampler.guidance_schedule",
    "generator.diff_width": "generator.head.width",
    "generator.diff_depth": "generator.head.depth",
    "generator.diff_batch_mul": "generator.head.batch_mul",
    "generator.diff_sample_steps": "generator.head.sample_steps",
}

# What a checkpoint written before a field existed was trained with, where today's default differs.
BEFORE_FIELD_EXISTED = {"generator.class_cond": "token"}


# ---------------------------------------------------------------------------------------------------------
# `--set a.b=value` overrides, checked against the dataclass fields (a typo is an error, never ignored)
# ---------------------------------------------------------------------------------------------------------

def valid_keys(cfg) -> list[str]:
    """Every settable key of a config tree, dotted: "seed", "tokenizer.beta", "generator.head.width"..."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        keys += [f"{f.name}.{k}" for k in valid_keys(value)] if dataclasses.is_dataclass(value) else [f.name]
    return keys


def _parse(text: str, hint) -> object:
    """Turn the text of an override into a value of the field's annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        if text.lower() in ("none", "null", ""):
            return None
        return _parse(text, next(a for a in args if a is not type(None)))
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if hint is int:
        return int(text)                                   # "1.5" is an error, not 1
    if hint in (float, str):
        return hint(text)
    if origin is tuple:
        items = [item.strip() for item in text.strip("()[] ").split(",") if item.strip()]
        types_ = [args[0]] * len(items) if args[-1] is Ellipsis else list(args)
        if len(types_) != len(items):
            raise ValueError(f"expected {len(types_)} comma-separated values, got {text!r}")
        return tuple(_parse(item, t) for item, t in zip(items, types_))
    raise ValueError(f"cannot parse {text!r} as {hint}")


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` strings in place; unknown keys raise with the list of valid ones. A key that was
    renamed (`RENAMED`) sets the field under its new name."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = RENAMED.get(key.strip(), key.strip())
        *path, name = key.split(".")
        target = cfg
        for part in path:
            target = getattr(target, part, None)
        if target is None or not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
            raise ValueError(f"unknown config key {key!r}. Valid keys:\n  " + "\n  ".join(valid_keys(cfg)))
        hint = typing.get_type_hints(type(target))[name]
        try:
            setattr(target, name, _parse(text.strip(), hint))
        except (ValueError, SyntaxError, TypeError) as e:
            raise ValueError(f"bad value for {key}: {e}") from None
    return cfg


# ---------------------------------------------------------------------------------------------------------
# The dict form stored in checkpoints
# ---------------------------------------------------------------------------------------------------------

def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _build(cls, values: dict[str, object], prefix: str = ""):
    """A dataclass of type `cls` from dotted values: given fields take them, the others their defaults."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        key, hint = prefix + f.name, typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, values, key + ".")
        elif key in values:
            kwargs[f.name] = tuple(values[key]) if isinstance(values[key], list) else values[key]
    return cls(**kwargs)


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from `to_dict` output, as stored in checkpoints, of this or an older version: renamed
    fields are read under their new names (`RENAMED`); fields the dict lacks take what the version before them
    used (`BEFORE_FIELD_EXISTED`), else today's defaults. A field this version does not know is an error."""
    values = {RENAMED.get(k, k): v for k, v in _flatten(d).items()}
    unknown = sorted(set(values) - set(valid_keys(RunConfig())))
    if unknown:
        raise ValueError(f"config fields {', '.join(unknown)} are unknown to this version of minimuse "
                         f"(written by a newer one?)")
    return _build(RunConfig, {**BEFORE_FIELD_EXISTED, **values})
