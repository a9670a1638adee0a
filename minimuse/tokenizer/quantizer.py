"""Vector quantizer: the discrete bottleneck of the VQGAN tokenizer.

Each encoder vector is replaced by its nearest entry of a learned codebook of K codes; gradients skip the
non-differentiable lookup with the straight-through estimator (VQ-VAE, van den Oord et al. 2017, §3.1).
Options, each from a paper:
  - EMA codebook updates instead of the codebook loss (VQ-VAE appendix A.1, VQ-VAE-2).
  - a low-dimensional, l2-normalised lookup space (ViT-VQGAN §3.2, Yu et al. 2021; LlamaGen uses code_dim 8).
  - restart of dead codes from encodings of the current batch (SoundStream §3.2, Zeghidour et al. 2021).
All lookup math (distances, loss, EMA) runs in fp32, also under bf16 autocast.
"""
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


@dataclass
class QuantizerOutput:
    z_q: Tensor         # (B, D, h, w) quantised latents; forward = codes, backward = identity to the encoding
    loss: Tensor        # scalar: codebook + beta * commitment (codebook term omitted when ema=True)
    ids: Tensor         # (B, h, w) int64 code indices
    perplexity: Tensor  # scalar, exp(entropy of the batch's code histogram)
    usage: Tensor       # scalar in [0, 1], fraction of codes used in this batch

    @property
    def tokens(self) -> Tensor:
        """What the generator models: the ids (a continuous bottleneck gives latents here instead)."""
        return self.ids

    @property
    def stats(self) -> dict[str, Tensor]:
        return {"usage": self.usage, "ppl": self.perplexity}


def vq_loss(e: Tensor, q: Tensor, beta: float, codebook_term: bool = True) -> Tensor:
    """VQ-VAE eq. 3 without the reconstruction term: ||sg(e) - q||^2 + beta * ||e - sg(q)||^2.

    e: (N, C) encodings, q: (N, C) their codes. The codebook term pulls codes towards encodings; beta weighs
    the commitment term, which pulls the encoder towards its codes (taming's legacy=True swaps them).
    With EMA updates the codebook term is dropped (VQ-VAE appendix A.1).
    """
    commitment = (e - q.detach()).pow(2).mean()
    if not codebook_term:
        return beta * commitment
    return (e.detach() - q).pow(2).mean() + beta * commitment


def code_counts(ids: Tensor, codebook_size: int) -> Tensor:
    """How often each code occurs in `ids` (any shape): (K,) float. Unlike bincount, needs no GPU sync."""
    ids = ids.flatten()
    ones = torch.ones_like(ids, dtype=torch.float)
    return torch.zeros(codebook_size, device=ids.device).index_add_(0, ids, ones)


def codebook_stats(ids: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Perplexity exp(H(p)) of the code histogram p of `ids` (any shape), and the fraction of codes used."""
    counts = code_counts(ids, codebook_size)  # (K,)
    probs = counts / counts.sum()
    return torch.special.entr(probs).sum().exp(), (counts > 0).float().mean()


class VectorQuantizer(nn.Module):
    """Nearest-code lookup with straight-through gradients, on (B, D, h, w) encoder outputs.

    code_dim: lookup dimension; when it differs from dim, linear maps dim -> code_dim -> dim wrap the lookup
        (ViT-VQGAN's factorised codes). None keeps dim.
    l2_norm: l2-normalise encodings and codes, so the nearest code is the one of highest cosine similarity.
    ema: update codes as EMAs of their assigned encodings (decay ema_decay); the codebook is then a buffer.
    restart_dead: each code's usage is tracked as an EMA (decay usage_decay, a window of ~10 steps) of its
        share of the batch, relative to a uniform share (1.0 = used exactly 1/K of the time). Codes below
        dead_threshold (default 0.01: under 1% of a fair share) are reset to random encodings of the current
        batch. A never-used code is restarted after ~45 steps, early enough to stop a collapse in short runs.
    """

    def __init__(self, dim: int, codebook_size: int, code_dim: int | None = None, beta: float = 0.25,
                 l2_norm: bool = False, ema: bool = False, ema_decay: float = 0.99,
                 restart_dead: bool = True, dead_threshold: float = 0.01, usage_decay: float = 0.9):
        super().__init__()
        if dim < 1 or codebook_size < 1 or (code_dim is not None and code_dim < 1):
            raise ValueError(f"dim, codebook_size and code_dim must be positive, got "
                             f"{dim}, {codebook_size}, {code_dim}")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay}")
        code_dim = dim if code_dim is None else code_dim
        self.dim, self.codebook_size, self.code_dim = dim, codebook_size, code_dim
        self.beta, self.l2_norm, self.ema, self.ema_decay = beta, l2_norm, ema, ema_decay
        self.restart_dead, self.dead_threshold, self.usage_decay = restart_dead, dead_threshold, usage_decay
        self.in_proj = nn.Linear(dim, code_dim) if code_dim != dim else nn.Identity()
        self.out_proj = nn.Linear(code_dim, dim) if code_dim != dim else nn.Identity()

        codebook = torch.empty(codebook_size, code_dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        if l2_norm:
            codebook = F.normalize(codebook, dim=-1)
        if ema:
            self.register_buffer("codebook", codebook)  # (K, C)
            # Start as if each code had been assigned once, to itself, so sum / size equals the codebook.
            self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,)
            self.register_buffer("embed_sum", codebook.clone())  # (K, C)
        else:
            self.codebook = nn.Parameter(codebook)  # (K, C)
        # Every code starts with a fair share, so none is dead before the statistics have had time to form.
        self.register_buffer("code_usage", torch.ones(codebook_size))  # (K,)

    def codes(self) -> Tensor:
        """The codebook as the lookup sees it: (K, C), unit rows when l2_norm."""
        return F.normalize(self.codebook, dim=-1) if self.l2_norm else self.codebook

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z: (B, D, h, w) encoder output -> QuantizerOutput. Training mode also updates the EMA/usage buffers."""
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer expects (B, {self.dim}, h, w) latents, got {tuple(z.shape)}")
        B, _, h, w = z.shape
        e = self.in_proj(rearrange(z, "b d h w -> (b h w) d"))  # (N, C)
        with torch.autocast(device_type=z.device.type, enabled=False):
            e = e.float()
            if self.l2_norm:
                e = F.normalize(e, dim=-1)
            if self.training and self.restart_dead:
                # Before the lookup, so this step's gradients refer to the codebook it actually used.
                self._restart_dead_codes(e)
            codes = self.codes().float()  # (K, C)
            ids = self._nearest(e, codes)  # (N,)
            q = codes[ids]  # (N, C)
            loss = vq_loss(e, q, self.beta, codebook_term=not self.ema)
            z_q = e + (q - e).detach()  # straight-through: value of q, gradient of e
            if self.training:
                self._update_buffers(e.detach(), ids)
        with torch.no_grad():
            perplexity, usage = codebook_stats(ids, self.codebook_size)
        z_q = rearrange(self.out_proj(z_q), "(b h w) d -> b d h w", b=B, h=h, w=w)
        return QuantizerOutput(z_q, loss, rearrange(ids, "(b h w) -> b h w", b=B, h=h, w=w), perplexity, usage)

    def lookup(self, ids: Tensor) -> Tensor:
        """ids: (B, h, w) code indices -> (B, D, h, w) latents, the same path the decoder sees in forward."""
        if ids.dtype.is_floating_point or ids.ndim != 3:
            raise ValueError(f"lookup expects (B, h, w) integer ids, got {tuple(ids.shape)} {ids.dtype}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(f"ids must lie in [0, {self.codebook_size}), "
                             f"got [{ids.min().item()}, {ids.max().item()}]")
        q = self.codes().float()[ids]  # (B, h, w, C)
        return rearrange(self.out_proj(q), "b h w d -> b d h w")

    @torch.no_grad()
    def _nearest(self, e: Tensor, codes: Tensor) -> Tensor:
        """Index of the nearest code for each row of e: (N, C), codes: (K, C) -> (N,) int64."""
        if self.l2_norm:  # unit vectors: smallest distance = highest cosine similarity
            return (e @ codes.t()).argmax(dim=1)
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ codes.t() + codes.pow(2).sum(1)  # (N, K) squared L2
        return dist.argmin(dim=1)

    @torch.no_grad()
    def _update_buffers(self, e: Tensor, ids: Tensor) -> None:
        """Usage EMA for dead-code restart, and the EMA codebook (VQ-VAE appendix A.1, eqs. 6-8).

        Under DDP the statistics are summed over every process's batch first, so each process updates its
        buffers from the whole global batch and the codebooks stay equal (DDP averages gradients, but these
        buffers are no gradients, and its buffer broadcast alone would keep rank 0's batch only).
        """
        d, K = self.ema_decay, self.codebook_size
        counts, total = code_counts(ids, K), ids.numel()  # (K,)
        summed = torch.zeros_like(self.embed_sum).index_add_(0, ids, e) if self.ema else None  # (K, C) sums
        if dist.is_available() and dist.is_initialized():
            for stat in (counts, summed) if self.ema else (counts,):
                dist.all_reduce(stat)
            total *= dist.get_world_size()
        if self.restart_dead:
            u = self.usage_decay
            self.code_usage.mul_(u).add_(counts * (K / total), alpha=1 - u)
        if not self.ema:
            return
        self.cluster_size.mul_(d).add_(counts, alpha=1 - d)  # N_i, eq. 6
        self.embed_sum.mul_(d).add_(summed, alpha=1 - d)  # m_i, eq. 7
        # Laplace smoothing keeps the division finite for codes whose count has decayed to ~0.
        n, eps = self.cluster_size.sum(), 1e-5
        size = (self.cluster_size + eps) / (n + K * eps) * n
        codebook = self.embed_sum / size.unsqueeze(1)  # e_i = m_i / N_i, eq. 8
        self.codebook.copy_(F.normalize(codebook, dim=-1) if self.l2_norm else codebook)

    @torch.no_grad()
    def _restart_dead_codes(self, e: Tensor) -> None:
        """Reset codes whose usage EMA fell below dead_threshold to random rows of e: (N, C). SoundStream §3.2.

        Uses the global RNG, so torch.manual_seed controls it. Under DDP the new codes come from rank 0's batch.
        The codebook is written in place on every training forward (a masked write, so no GPU sync): with
        l2_norm, run backward before the next training forward, as any ordinary training loop does.
        """
        dead = (self.code_usage < self.dead_threshold).unsqueeze(1)  # (K, 1)
        # A candidate row for every code, kept only where the code is dead: no data-dependent shapes, no sync.
        picks = e[torch.randint(0, e.shape[0], (self.codebook_size,), device=e.device)]  # (K, C)
        self.codebook.copy_(torch.where(dead, picks, self.codebook))
        if dist.is_available() and dist.is_initialized():
            # Every rank agrees on which codes are dead (the usage statistics are summed over all ranks), but
            # each picked its own rows: take rank 0's new codes everywhere, or the codebooks would drift apart.
            dist.broadcast(self.codebook, src=0)
        self.code_usage.masked_fill_(dead.squeeze(1), 1.0)  # a fresh code gets a full share of grace time
        if self.ema:
            self.cluster_size.masked_fill_(dead.squeeze(1), 1.0)
            self.embed_sum.copy_(torch.where(dead, self.codebook, self.embed_sum))  # the codes just chosen
