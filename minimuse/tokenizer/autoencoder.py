"""The tokenizer: a conv encoder, a swappable bottleneck and a conv decoder (the VQGAN autoencoder).

Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis" (VQGAN), built on
van den Oord et al. 2017 (VQ-VAE). Images are float tensors (B, 3, H, W) in [-1, 1]; the encoder downsamples
by f = 2 ** (len(channel_mult) - 1) to a (B, latent_dim, h, w) grid, h = H / f.

    encode(images) -> tokens: ids (B, h, w) or latents (B, h, w, C)      decode(tokens) -> images (B, 3, H, W)

The bottleneck (`tokenizer.bottleneck`) is the only piece that knows whether tokens are discrete (vq:
`quantizer.py`) or continuous (kl | plain: `continuous.py`, MAR's tokens); the encoder and decoder never change
when it is swapped. The losses that train it (reconstruction, PatchGAN, the adaptive weight) are in
`losses.py`, the perceptual one in `lpips.py`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from minimuse.config import TokenizerConfig
from minimuse.tokenizer.continuous import ContinuousBottleneck
from minimuse.tokenizer.quantizer import VectorQuantizer

# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels // 4), num_channels=channels, eps=1e-6)


def conv3x3(c_in: int, c_out: int, stride: int = 1, padding_mode: str = "zeros") -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode=padding_mode)


class ConvResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus a (1x1-projected) skip: the residual block of Taming/LDM."""

    def __init__(self, c_in: int, c_out: int, padding_mode: str = "zeros"):
        super().__init__()
        self.body = nn.Sequential(norm(c_in), nn.SiLU(), conv3x3(c_in, c_out, padding_mode=padding_mode),
                                  norm(c_out), nn.SiLU(), conv3x3(c_out, c_out, padding_mode=padding_mode))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the (h*w) positions of the lowest-resolution feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (n c) h w -> n b 1 (h w) c", n=3)
        out = F.scaled_dot_product_attention(q, k, v)                    # (B, 1, h*w, C)
        return x + self.proj(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


def downsampling_factor(cfg: TokenizerConfig) -> int:
    f = 2 ** (len(cfg.channel_mult) - 1)
    if f not in (2, 4, 8, 16):
        raise ValueError(f"tokenizer.channel_mult={cfg.channel_mult} gives f={f}; use 2 to 5 levels (f = 2, 4, 8, 16)")
    return f


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, latent_dim, H/f, W/f): conv in, residual levels with stride-2 downsampling, middle.

    `cfg.encoder_padding` picks how every conv pads. Zero padding (Taming's) tells each layer where the image
    edge is, and the quantiser then spends codes on *where* a patch is as well as *what* it is: a flat-colour
    image encodes to many different codes over the grid. With "replicate" a flat region maps to one code
    wherever it lies.
    """

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        pad = cfg.encoder_padding
        widths = [cfg.channels * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [conv3x3(3, widths[0], padding_mode=pad)]
        c = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ConvResBlock(c, width, pad))
                c = width
            if level < len(widths) - 1:
                layers.append(conv3x3(c, c, stride=2, padding_mode=pad))
        layers += [ConvResBlock(c, c, pad), *([AttnBlock(c)] if cfg.attention else []), ConvResBlock(c, c, pad),
                   norm(c), nn.SiLU(), conv3x3(c, cfg.latent_dim, padding_mode=pad)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, latent_dim, h, w) -> (B, 3, h*f, w*f): the encoder mirrored, nearest-neighbour upsampling + conv."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        widths = [cfg.channels * m for m in reversed(cfg.channel_mult)]
        c = widths[0]
        layers: list[nn.Module] = [conv3x3(cfg.latent_dim, c),
                                   ConvResBlock(c, c), *([AttnBlock(c)] if cfg.attention else []), ConvResBlock(c, c)]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ConvResBlock(c, width))
                c = width
            if level < len(widths) - 1:     # upsample straight to the next level's width: half the full-res cost
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(c, widths[level + 1])]
                c = widths[level + 1]
        layers += [norm(c), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = conv3x3(c, 3)   # "the last layer" of the adaptive GAN weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.net(z))


# ---------------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------------


def build_bottleneck(cfg: TokenizerConfig) -> nn.Module:
    if cfg.bottleneck == "vq":
        return VectorQuantizer(cfg.latent_dim, cfg.codebook_size, code_dim=cfg.code_dim, beta=cfg.beta,
                               l2_norm=cfg.l2_norm, ema=cfg.ema, ema_decay=cfg.ema_decay,
                               restart_dead=cfg.restart_dead)
    if cfg.bottleneck in ("kl", "plain"):
        return ContinuousBottleneck(cfg.latent_dim, cfg.token_dim, cfg.bottleneck == "kl", cfg.kl_weight)
    raise ValueError(f"unknown tokenizer.bottleneck {cfg.bottleneck!r}; choose vq, kl or plain")


class Autoencoder(nn.Module):
    """Encoder -> bottleneck (vq | kl | plain) -> decoder. `forward` returns what the training losses need."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.f = downsampling_factor(cfg)
        self.encoder = Encoder(cfg)
        self.bottleneck = build_bottleneck(cfg)
        self.decoder = Decoder(cfg)

    @property
    def discrete(self) -> bool:
        return self.cfg.bottleneck == "vq"

    def forward(self, images: torch.Tensor):
        """images (B, 3, H, W) -> (reconstruction (B, 3, H, W), bottleneck output with .loss, .tokens, .stats)."""
        q = self.bottleneck(self.encoder(images))
        return self.decoder(q.z_q), q

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> tokens: ids (B, h, w), or latents (B, h, w, C) when continuous."""
        return self.bottleneck(self.encoder(images)).tokens

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, h, w) ids or (B, h, w, C) latents -> images (B, 3, H, W), clamped to [-1, 1]."""
        return self.decoder(self.bottleneck.lookup(tokens)).clamp(-1, 1)


