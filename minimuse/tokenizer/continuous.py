"""The continuous bottleneck: latents instead of ids, the tokens MAR models.

A KL bottleneck (a diagonal Gaussian posterior, the KL-f autoencoder of LDM, Rombach et al. 2022 §3; MAR uses its
KL-16) or a plain one (a 1x1 projection, no noise, no KL).

Units of `kl_weight`: the reconstruction loss is a per-pixel mean while the KL here is a sum over every latent
(channels and positions), averaged over the batch, as in LDM's code. LDM's own weight (1e-6) multiplies the same
KL sum but a reconstruction loss summed over pixels; against our per-pixel mean, 1e-6 here weighs the KL
3 * 32 * 32 ~ 3000 times more than LDM's 1e-6 does at 32 px, i.e. like ~3e-3 in LDM's units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import rearrange


@dataclass
class ContinuousOutput:
    z_q: torch.Tensor       # (B, D, h, w) what the decoder sees
    loss: torch.Tensor      # scalar: kl_weight * KL (0 for the plain bottleneck)
    tokens: torch.Tensor    # (B, h, w, C) scaled latents, what MAR models
    stats: dict


class ContinuousBottleneck(nn.Module):
    """Continuous tokens for MAR: a KL bottleneck (`kl=True`) or a plain one.

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
    def measure_scale(self, z: torch.Tensor) -> None:
        """Set scale = 1 / std of the unscaled posterior means of encoder outputs z (N, D, h, w) of training data."""
        means = self.to_moments(z)[:, : self.from_tokens.in_channels]                 # the means, not the logvars
        self.scale.fill_(1.0 / means.float().std().clamp(min=1e-6))
