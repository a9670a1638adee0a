"""The losses that train the tokenizer besides LPIPS: reconstruction, and the PatchGAN with Taming's adaptive weight.

    L_G = L_rec + w_p * LPIPS + L_bottleneck + lambda * L_GAN       (Taming eq. 5-7, with lambda from eq. 7)
    L_D = hinge loss of a PatchGAN on real vs reconstructed images
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minimuse.tokenizer.autoencoder import norm


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
    """Taming eq. 7: lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta), G_L = decoder's last layer.

    Balances the GAN gradient against the reconstruction gradient at the decoder output; clamped to [0, 1e4]
    and detached as in Taming, so it scales the loss but is not itself optimised. delta = 1e-6 is the paper's;
    Taming's code adds 1e-4 instead, which caps lambda lower when the GAN gradient is tiny (early training).
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
