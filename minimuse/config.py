"""Configs: one dataclass per component, one function per named preset, and `--set a.b=value` overrides.

Every default lives here and only here (STYLE.md: "one source of truth"). Model code receives plain values
from these dataclasses and never asks which preset it is in.
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
    train_size: int | None = None        # None: the dataset's own size (Shapes: 50,000)
    holdout_size: int = 1000             # held-out images for evaluation
    root: str | None = None              # download/cache folder (None: ~/.cache/minimuse)


@dataclass
class TokenizerConfig:
    """VQGAN (Esser et al. 2021, "Taming Transformers") and its swappable bottleneck."""
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
    kl_weight: float = 1e-6
    # losses
    rec_loss: str = "l1"                 # l1 | l2
    lpips_weights: str | None = None     # path to LPIPS weights (python -m minimuse.lpips); None: no perceptual loss
    perceptual_weight: float = 1.0
    disc_start: int = 1000               # step at which the PatchGAN loss switches on
    disc_weight: float = 0.5             # multiplies the adaptive weight
    disc_channels: int = 64
    disc_layers: int = 3


@dataclass
class GeneratorConfig:
    """Masked transformer (MaskGIT / Muse) or MAR (Li et al. 2024) over the tokenizer's grid."""
    kind: str = "maskgit"                # maskgit | mar
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
    diff_width: int = 256
    diff_depth: int = 3
    diff_batch_mul: int = 4
    diff_sample_steps: int = 100


@dataclass
class SamplerConfig:
    steps: int = 8                       # forward passes (MaskGIT/Muse) or iterations (MAR)
    schedule: str = "cosine"             # fraction still masked after step t: cosine | linear | sqrt | square | cubic
    temperature: float = 1.0             # token sampling temperature (MAR: diffusion noise temperature)
    choice_temperature: float = 4.5      # Gumbel noise on confidences, annealed linearly to 0
    cfg: float = 2.0                     # guidance scale s in (1 + s) * cond - s * uncond
    cfg_schedule: str = "linear"         # linear (ramp 0 -> s) | constant
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
# Presets
# ---------------------------------------------------------------------------------------------------------

def tiny() -> RunConfig:
    """Shapes 32x32 -> 8x8 tokens; both stages on a 2-core laptop CPU in minutes.

    Sized by measurement (docs/benchmarks.md): a narrow full-resolution level (16 channels) makes a tokenizer
    step cheap enough for ~6000 small-batch steps in 5 minutes, which beat fewer, wider or larger-batch steps;
    the PatchGAN stays off because the run is too short for it to pay back its cost in PSNR. The generator has a
    3x3 depthwise conv in every block (`local_conv`): without it twice the steps barely moved the samples (~35%),
    with it they keep improving. The class enters through adaLN-Zero (the default `class_cond`): 79-83% at 4600
    steps against 47-52% as a prefix token. Sampling keeps the 10 most likely codes (`top_k`): +9-11 points
    with label smoothing (87.0-87.2% in two whole runs), +1-2 without it. No label smoothing (the default 0.1
    is for large codebooks on real images): on the same tokens 88.3% and 87.2% at two seeds against 84.9%. A
    choice temperature of 2.5 instead of MaskGIT's 4.5: +1.3 points on average over five trained generators
    (-0.1 to +2.2), the worst class up ~5 points in all four where it was measured, the spread within 4
    points. A learning rate of 2e-3 instead of 1e-3: 91.8% and 93.6% against 90.3% and 87.1% at two seeds on
    the same tokens (1536 samples each), 92.4% at a third; 3e-3 gave 93.0% and 90.7% at two. Precision "auto"
    picks bf16 on a CPU with fast bf16 matmuls (~1.8x per step here; without them the generator stage takes
    about twice as long). The tokenizer stays fp32: bf16 saved it 7%. The generator is compiled
    (`compile=True`, where a C++ compiler is found): a bf16 step 1.28x faster after a 1-minute compile (the
    tokenizer's convolutions gained nothing from it). Its savings buy 5500 generator steps for the time 4600
    eager ones took: 95.4% and 94.1% in two trainings against 94.1% at 4600 on the same tokens, 93.2% against
    92.5% on another tokenizer; the triangles, drawn too small, grow from 10.4 to 11.1-11.2 px (data: 11.6).
    Both stages took 19.8-23.8 min on slow days (18.8-20.7 with 4600 eager steps; 11.3-11.7 on a fast day).
    Guidance 1.5 rather than 2, re-swept on four generators of this recipe: the same accuracy (93.2% against
    93.4% on average, the worst class 84.8% against 84.6%) with the sizes' spread 1-4 points narrower on every
    one (guidance makes squares bigger): positions and sizes within 20% in 6 of 8 generator-seed pairs against 5.
    """
    return RunConfig(
        preset="tiny",
        tokenizer=TokenizerConfig(channels=16, channel_mult=(1, 2, 4), latent_dim=32, codebook_size=256,
                                  disc_start=10**9),
        generator=GeneratorConfig(dim=128, depth=4, heads=4, diff_width=128, local_conv=True,
                                  label_smoothing=0.0),
        train_tokenizer=TrainConfig(steps=6000, batch_size=16, lr=1e-3, warmup=100, sample_every=1000,
                                    ckpt_every=1000, precision="fp32"),
        sampler=SamplerConfig(top_k=10, choice_temperature=2.5, cfg=1.5),
        train_generator=TrainConfig(steps=5500, batch_size=64, lr=2e-3, warmup=100, weight_decay=0.05,
                                    betas=(0.9, 0.95), sample_every=500, compile=True),
    )


def tiny_mar() -> RunConfig:
    """tiny with a continuous KL tokenizer and a MAR generator with a diffusion MLP head.

    Measured (docs/benchmarks.md): three times tiny's learning rate gets the generator reading the class
    sooner; 1700 steps were too few. The tokenizer gives up 1500 steps (31.2 dB, was 32.8) so that both
    stages fit the 20 minutes. The 3x3 convolution in the decoder blocks brought the sizes and positions
    within 20% of the data's (27% accuracy, was 9.9%), and the class through adaLN-Zero in every block (the
    default `class_cond`, on top of MAR's buffer tokens) took it to 87.2% in 18.6 min. Guidance ramped to 8
    instead of 1: 93.6% against 82.3% on the same model, the spread still within 8% of the data's (a constant 3
    gets the same accuracy with the sizes 16% too large). The generator trains under tiny's precision "auto":
    bf16 autocast made its step 1.8x faster with the same loss, which keeps both stages inside the 20 minutes
    on a slow day (22.6 min in fp32).
    """
    cfg = tiny()
    cfg.preset = "tiny-mar"
    cfg.tokenizer.bottleneck = "kl"
    cfg.generator = GeneratorConfig(kind="mar", dim=128, depth=3, decoder_depth=2, heads=4, diff_width=128,
                                    local_conv=True)
    cfg.sampler = SamplerConfig(steps=16, temperature=1.0, cfg=8.0, cfg_schedule="linear")
    cfg.train_tokenizer.steps = 4500
    cfg.train_generator.steps = 2000           # a MAR step costs more: 4 diffusion draws per masked token
    cfg.train_generator.lr = 3e-3
    cfg.train_generator.compile = False        # MAR indexes a masked count drawn per batch: a new graph each step
    return cfg


def cifar10() -> RunConfig:
    """CIFAR-10 32x32 on one GPU: 8x8 tokens, a bigger codebook, GAN and bf16."""
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
    """ImageNet-style folder at 256 or 512: f=16 tokenizer (16x16 or 32x32 tokens), a MaskGIT-base-sized model."""
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


PRESETS: dict[str, typing.Callable[[], RunConfig]] = {
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


# ---------------------------------------------------------------------------------------------------------
# `--set a.b=value` overrides, checked against the dataclass fields (a typo is an error, never ignored)
# ---------------------------------------------------------------------------------------------------------

def valid_keys(cfg: RunConfig) -> list[str]:
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
        else:
            keys.append(f.name)
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
    """Apply `section.key=value` strings in place; unknown keys raise with the list of valid ones."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        *path, name = key.strip().split(".")
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


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


# What a checkpoint written before a field existed was trained with, where today's default differs.
BEFORE_FIELD_EXISTED = {("generator", "class_cond"): "token"}


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from `to_dict` output (as stored in checkpoints). Fields the dict lacks (a checkpoint
    from an older version) take what that version used (`BEFORE_FIELD_EXISTED`), else today's defaults."""
    cfg = RunConfig()
    for f in dataclasses.fields(RunConfig):
        if f.name not in d:
            continue
        value = d[f.name]
        if isinstance(value, dict):
            cls = typing.get_type_hints(RunConfig)[f.name]
            old = {key: v for (section, key), v in BEFORE_FIELD_EXISTED.items() if section == f.name}
            value = cls(**{**old, **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}})
        setattr(cfg, f.name, value)
    return cfg
