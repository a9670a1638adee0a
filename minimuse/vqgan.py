"""VQGAN tokenizer: conv encoder/decoder, a swappable bottleneck, PatchGAN discriminator and the GAN losses.

Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis" (VQGAN), built on
van den Oord et al. 2017 (VQ-VAE). Images are float tensors (B, 3, H, W) in [-1, 1]; the encoder downsamples
by f = 2 ** (len(channel_mult) - 1) to a (B, latent_dim, h, w) grid, h = H / f.

    encode(images) -> ids (B, h, w)      decode(ids) -> images (B, 3, H, W)

The bottleneck is the only piece that knows whether tokens are discrete (VQ ids) or continuous (MAR latents,
(B, h, w, C)); the encoder and decoder never change when it is swapped.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from minimuse.config import TokenizerConfig
from minimuse.quantizer import VectorQuantizer

# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels // 4), num_channels=channels, eps=1e-6)


def conv3x3(c_in: int, c_out: int, stride: int = 1, padding_mode: str = "zeros") -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode=padding_mode)


class ResBlock(nn.Module):
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
    edge is, and the quantiser then spends codes on *where* a patch is as well as *what* it is: a trained tiny
    tokenizer encoded a flat-colour image to ~20 different codes over its 8x8 grid. With "replicate" a flat
    region maps to one code wherever it lies (measured effect on the generator: docs/benchmarks.md).
    """

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        pad = cfg.encoder_padding
        widths = [cfg.channels * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [conv3x3(3, widths[0], padding_mode=pad)]
        c = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, width, pad))
                c = width
            if level < len(widths) - 1:
                layers.append(conv3x3(c, c, stride=2, padding_mode=pad))
        layers += [ResBlock(c, c, pad), *([AttnBlock(c)] if cfg.attention else []), ResBlock(c, c, pad),
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
                                   ResBlock(c, c), *([AttnBlock(c)] if cfg.attention else []), ResBlock(c, c)]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, width))
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


@dataclass
class ContinuousOutput:
    z_q: torch.Tensor       # (B, D, h, w) what the decoder sees
    loss: torch.Tensor      # scalar: kl_weight * KL (0 for the plain bottleneck)
    tokens: torch.Tensor    # (B, h, w, C) scaled latents, what MAR models
    stats: dict


class ContinuousBottleneck(nn.Module):
    """Continuous tokens for MAR: a KL bottleneck (diagonal Gaussian posterior, the KL-f autoencoder of LDM,
    Rombach et al. 2022 §3 — MAR uses its KL-16) or a plain one (a 1x1 projection, no noise, no KL).

    Tokens are the posterior means times `scale`, a 1/std measured on the data after training
    (`measure_scale`; LDM's scale factor), so MAR's diffusion head sees roughly unit-variance tokens.
    """

    def __init__(self, dim: int, token_dim: int, kl: bool, kl_weight: float):
        super().__init__()
        self.kl, self.kl_weight = kl, kl_weight
        self.to_moments = nn.Conv2d(dim, 2 * token_dim if kl else token_dim, 1)
        self.from_tokens = nn.Conv2d(token_dim, dim, 1)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, z: torch.Tensor) -> ContinuousOutput:
        """z (B, D, h, w) -> a posterior sample in training (its mean in eval), projected back to D channels."""
        moments = self.to_moments(z)
        if self.kl:
            mean, logvar = moments.chunk(2, dim=1)                        # (B, C, h, w) each
            logvar = logvar.clamp(-30.0, 20.0)
            latent = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
            # KL(N(mean, var) || N(0, 1)), summed over channels and positions, averaged over the batch (LDM)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
        else:
            mean = latent = moments
            kl = torch.zeros((), device=z.device)
        tokens = rearrange(mean * self.scale, "b c h w -> b h w c")
        return ContinuousOutput(self.from_tokens(latent), self.kl_weight * kl, tokens,
                                {"kl": kl.detach(), "std": mean.detach().std()})

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scaled tokens (B, h, w, C) -> decoder input (B, D, h, w)."""
        return self.from_tokens(rearrange(tokens, "b h w c -> b c h w") / self.scale)

    @torch.no_grad()
    def measure_scale(self, latents: torch.Tensor) -> None:
        """Set scale = 1 / std of unscaled posterior means (any shape) from the training data."""
        self.scale.fill_(1.0 / latents.float().std().clamp(min=1e-6))


def build_bottleneck(cfg: TokenizerConfig) -> nn.Module:
    if cfg.bottleneck == "vq":
        return VectorQuantizer(cfg.latent_dim, cfg.codebook_size, code_dim=cfg.code_dim, beta=cfg.beta,
                               l2_norm=cfg.l2_norm, ema=cfg.ema, ema_decay=cfg.ema_decay,
                               restart_dead=cfg.restart_dead)
    if cfg.bottleneck in ("kl", "plain"):
        return ContinuousBottleneck(cfg.latent_dim, cfg.token_dim, cfg.bottleneck == "kl", cfg.kl_weight)
    raise ValueError(f"unknown tokenizer.bottleneck {cfg.bottleneck!r}; choose vq, kl or plain")


class VQGAN(nn.Module):
    """Encoder -> bottleneck -> decoder. `forward` returns what the training losses need."""

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


# ---------------------------------------------------------------------------------------------------------
# Discriminator and GAN losses
# ---------------------------------------------------------------------------------------------------------


class PatchGAN(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, pix2pix; as in Taming): a logit per overlapping patch.

    GroupNorm instead of Taming's BatchNorm so the loss does not depend on batch composition (and needs no
    SyncBatchNorm under DDP).
    """

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            c_out = channels * min(2 ** i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, c_out, 4, stride=stride, padding=1, bias=False), norm(c_out), nn.LeakyReLU(0.2)]
            c = c_out
        mods.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)                                           # (B, 1, h', w') logits


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator (Lim & Ye 2017; Taming eq. 5's GAN term in hinge form)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """Taming eq. 7: lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + 1e-6), G_L = decoder's last layer.

    Balances the GAN gradient against the reconstruction gradient at the decoder output; clamped and
    detached as in Taming, so it scales the loss but is not itself optimised.
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-6)).clamp(0.0, 1e4).detach()


def reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return (x - x_rec).abs().mean()
    if kind == "l2":
        return F.mse_loss(x_rec, x)
    raise ValueError(f"unknown tokenizer.rec_loss {kind!r}; choose l1 or l2")
