"""Iterative parallel decoding: a whole image in a handful of forward passes (MaskGIT §3.2; Muse §2.8).
Start reading here.

Start from a canvas of [MASK] tokens. At every step t = 0 .. T-1:

  1. predict a distribution over the codebook for every position (with classifier-free guidance);
  2. sample a token at every still-masked position;
  3. score each sample by its log-probability plus annealed Gumbel noise (its "confidence");
  4. keep the n_t = floor(N * gamma((t+1)/T)) least confident positions masked and accept the rest
     (at least one token is accepted per step, and one stays masked until the last step).

gamma is the mask schedule (`minimuse.masking`): the fraction of tokens still masked after a fraction x of the
steps. The cosine gamma(x) = cos(pi/2 * x) decodes few tokens early, when the model knows little, and many late.
Accepted tokens are final: they get infinite confidence and are never masked again (which is also how
in/outpainting works: the known tokens start accepted).

The decoder knows no model: it asks `logits_fn(ids, guidance_scale)` for the guided logits of a canvas, so a
trained transformer, the exact conditionals of a probe and a ten-line toy decode through the same loop.
Everything random draws from one `torch.Generator`, so a seed fixes the samples.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from minimuse.conditioning import guidance_at
from minimuse.config import SamplerConfig
from minimuse.masking import num_masked_after

# ---------------------------------------------------------------------------------------------------------
# Small pure pieces: temperatures, Gumbel sampling, top-k
# ---------------------------------------------------------------------------------------------------------


def choice_temperature_at(step: int, steps: int, base: float) -> float:
    """Gumbel-noise scale on the confidences at `step`: base * (1 - (step+1)/steps).

    Computed from the step index every time — never by multiplying last step's value — so the annealing is
    linear and does not compound. Noise is large early (explore which tokens to accept) and 0 at the end.
    """
    return base * (1.0 - (step + 1) / steps)


def gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(U)), U ~ U(0, 1), clamped away from 0 and 1."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per position, -inf elsewhere (k = 0: keep all)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


# ---------------------------------------------------------------------------------------------------------
# The decoding loop
# ---------------------------------------------------------------------------------------------------------

LogitsFn = Callable[[torch.Tensor, float], torch.Tensor]   # (ids (B, L), guidance scale) -> logits (B, L, K)


@torch.no_grad()
def parallel_decode(logits_fn: LogitsFn, init_ids: torch.Tensor, mask_id: int, sampler: SamplerConfig, *,
                    generator: torch.Generator | None = None, history: list | None = None) -> torch.Tensor:
    """Fill every `mask_id` of the token grids init_ids (B, h, w) in `sampler.steps` steps; the other tokens are
    kept. Returns ids (B, h, w) with no [MASK] left.

    logits_fn(ids (B, L), s) gives the logits (B, L, K), guided with scale s (`guidance_at`; s = 0: conditional
    only). Uses sampler.steps, schedule, temperature, choice_temperature, guidance, guidance_schedule and top_k.
    If `history` is a list, (ids, masked), each (B, h, w), after each step are appended to it (for filmstrips).
    """
    side = init_ids.shape[1]
    ids = rearrange(init_ids, "b h w -> b (h w)").clone()                # (B, L)
    masked = ids == mask_id                                               # (B, L) True = still to decode
    total = masked.sum(dim=1)                                             # (B,) tokens to generate per row
    steps = sampler.steps

    for t in range(steps):
        # 1. guided logits for every position
        logits = logits_fn(ids, guidance_at(t, steps, sampler.guidance, sampler.guidance_schedule))
        logits = top_k_filter(logits / max(sampler.temperature, 1e-6), sampler.top_k)

        # 2. sample a token everywhere (Gumbel-max = a categorical draw, cheaper than multinomial);
        #    positions that are already decoded keep their token
        sampled = (logits + gumbel(logits.shape, generator, ids.device)).argmax(dim=-1)   # (B, L)
        sampled = torch.where(masked, sampled, ids)

        # 3. confidence = log p(sampled token) + annealed Gumbel noise; decoded tokens are certain
        logp = F.log_softmax(logits, dim=-1).gather(-1, sampled[..., None]).squeeze(-1)
        noise = choice_temperature_at(t, steps, sampler.choice_temperature) * gumbel(logp.shape, generator,
                                                                                      ids.device)
        confidence = torch.where(masked, logp + noise, torch.full_like(logp, float("inf")))

        # 4. re-mask the n least confident positions (exactly n per row: rank positions by confidence)
        n = num_masked_after(t, steps, total, masked.sum(dim=1), sampler.schedule)       # (B,)
        rank = confidence.argsort(dim=1).argsort(dim=1)                                 # 0 = least confident
        masked = rank < n[:, None]
        ids = torch.where(masked, torch.full_like(sampled, mask_id), sampled)
        if history is not None:
            history.append((rearrange(sampled, "b (h w) -> b h w", h=side),
                            rearrange(masked, "b (h w) -> b h w", h=side)))

    return rearrange(ids, "b (h w) -> b h w", h=side)
