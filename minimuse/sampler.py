"""Iterative parallel decoding: a whole image in a handful of forward passes (MaskGIT §3.2; Muse §2.8).

Start from a canvas of [MASK] tokens. At every step t = 0 .. T-1:

  1. predict a distribution over the codebook for every position (with classifier-free guidance);
  2. sample a token at every still-masked position;
  3. score each sample by its log-probability plus annealed Gumbel noise (its "confidence");
  4. keep the n_t = floor(N * gamma((t+1)/T)) least confident positions masked and accept the rest
     (at least one token is accepted per step, and one stays masked until the last step).

gamma is the mask schedule: the fraction of tokens still masked after a fraction x of the steps. The cosine
gamma(x) = cos(pi/2 * x) decodes few tokens early, when the model knows little, and many late. Accepted tokens
are final: they get infinite confidence and are never masked again (which is also how in/outpainting works:
the known tokens start accepted).

Everything random draws from one `torch.Generator`, so a seed fixes the samples.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

# ---------------------------------------------------------------------------------------------------------
# Mask schedules gamma: [0, 1] -> [0, 1], gamma(0) = 1 (all masked), gamma(1) = 0 (all decoded)
# ---------------------------------------------------------------------------------------------------------

SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": lambda x: math.cos(math.pi / 2 * x),     # MaskGIT's choice, and Muse's
    "linear": lambda x: 1.0 - x,
    "sqrt": lambda x: 1.0 - math.sqrt(x),              # convex: decodes many tokens early
    "square": lambda x: 1.0 - x ** 2,                  # concave, like cosine
    "cubic": lambda x: 1.0 - x ** 3,                   # concave, even fewer tokens early
}


def mask_schedule(name: str) -> Callable[[float], float]:
    if name not in SCHEDULES:
        raise ValueError(f"unknown mask schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


def num_masked_after(step: int, steps: int, total: torch.Tensor, masked_now: torch.Tensor,
                     schedule: str = "cosine") -> torch.Tensor:
    """How many tokens stay masked after `step` (0-based) of `steps`, per row.

    n = floor(total * gamma((step+1)/steps)), but fewer than are masked now (every step decodes at least one
    token; decoded tokens are final) and at least 1 until the last step, so the last step still has something
    to decide. Where the two clash (more steps than tokens) the one masked token waits. 0 after the last step.
    total, masked_now: (B,) int counts of tokens to generate and tokens still masked.
    """
    if step == steps - 1:
        return torch.zeros_like(masked_now)
    n = torch.floor(total * mask_schedule(schedule)((step + 1) / steps)).long()
    return torch.minimum(n, masked_now - 1).clamp(min=1)


# ---------------------------------------------------------------------------------------------------------
# Small pure pieces: guidance, temperatures, Gumbel sampling
# ---------------------------------------------------------------------------------------------------------


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, Muse §2.7: l_g = (1 + s) * l_c - s * l_u. s = 0 gives the conditional output."""
    return (1.0 + scale) * cond - scale * uncond


def guidance_at(step: int, steps: int, scale: float, schedule: str = "linear") -> float:
    """Guidance scale at `step`: constant, or ramped linearly from 0 at the first step to `scale` at the last
    (Muse §2.7: low guidance early keeps diversity, high guidance late sharpens the details)."""
    if schedule == "constant":
        return scale
    if schedule == "linear":
        return scale * step / (steps - 1) if steps > 1 else scale
    raise ValueError(f"unknown cfg schedule {schedule!r}; choose linear or constant")


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
# The sampler
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def maskgit_sample(model, labels: torch.Tensor, steps: int = 8, *, schedule: str = "cosine",
                   temperature: float = 1.0, choice_temperature: float = 4.5, cfg: float = 0.0,
                   cfg_schedule: str = "linear", top_k: int = 0, init_ids: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, history: list | None = None) -> torch.Tensor:
    """Generate token grids with a `MaskedTransformer`.

    labels (B,) class ids. init_ids (B, h, w) optional: tokens to keep, with model.mask_id where to generate
    (inpainting/outpainting); default: everything masked. Returns ids (B, h, w) with no [MASK] left.
    If `history` is a list, (ids, masked) after each step are appended to it (for filmstrips).
    """
    device = labels.device
    b, side = len(labels), math.isqrt(model.seq_len)
    if init_ids is None:
        init_ids = torch.full((b, side, side), model.mask_id, device=device)
    ids = rearrange(init_ids, "b h w -> b (h w)").clone()                # (B, L)
    masked = ids == model.mask_id                                         # (B, L) True = still to decode
    total = masked.sum(dim=1)                                             # (B,) tokens to generate per row
    null = torch.full_like(labels, model.null_class)

    for t in range(steps):
        # 1. logits for every position; conditional and unconditional passes as one batched forward
        s = guidance_at(t, steps, cfg, cfg_schedule)
        if s != 0:
            cond, uncond = model(ids.repeat(2, 1), torch.cat([labels, null])).float().chunk(2)
            logits = cfg_mix(cond, uncond, s)
        else:
            logits = model(ids, labels).float()                           # (B, L, K)
        logits = top_k_filter(logits / max(temperature, 1e-6), top_k)

        # 2. sample a token everywhere (Gumbel-max = a categorical draw, cheaper than multinomial);
        #    positions that are already decoded keep their token
        sampled = (logits + gumbel(logits.shape, generator, device)).argmax(dim=-1)     # (B, L)
        sampled = torch.where(masked, sampled, ids)

        # 3. confidence = log p(sampled token) + annealed Gumbel noise; decoded tokens are certain
        logp = F.log_softmax(logits, dim=-1).gather(-1, sampled[..., None]).squeeze(-1)
        noise = choice_temperature_at(t, steps, choice_temperature) * gumbel(logp.shape, generator, device)
        confidence = torch.where(masked, logp + noise, torch.full_like(logp, float("inf")))

        # 4. re-mask the n least confident positions (exactly n per row: rank positions by confidence)
        n = num_masked_after(t, steps, total, masked.sum(dim=1), schedule)              # (B,)
        rank = confidence.argsort(dim=1).argsort(dim=1)                                 # 0 = least confident
        masked = rank < n[:, None]
        ids = torch.where(masked, torch.full_like(sampled, model.mask_id), sampled)
        if history is not None:
            history.append((rearrange(sampled, "b (h w) -> b h w", h=side), rearrange(masked, "b (h w) -> b h w", h=side)))

    return rearrange(ids, "b (h w) -> b h w", h=side)


@torch.no_grad()
def generate(model, tokenizer, labels: torch.Tensor, cfg, seed: int = 0, history: list | None = None,
             init_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Class labels (B,) -> images (B, 3, H, W) in [-1, 1]: sample tokens with the settings of a `SamplerConfig`
    (MaskGIT decoding for a MaskedTransformer, MAR's diffusion-head decoding for a MAR model), then decode them
    with the tokenizer. The same seed gives the same images. init_ids (B, h, w), MaskGIT only: tokens to keep,
    [MASK] where to generate (inpainting)."""
    generator = torch.Generator(labels.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    if model.cfg.kind == "mar":
        if init_ids is not None:
            raise ValueError("inpainting from init_ids needs a MaskGIT generator, not MAR")
        tokens = model.sample(labels, cfg.steps, schedule=cfg.schedule, cfg=cfg.cfg, cfg_schedule=cfg.cfg_schedule,
                              temperature=cfg.temperature, generator=generator, history=history)
    else:
        tokens = maskgit_sample(model, labels, cfg.steps, schedule=cfg.schedule, temperature=cfg.temperature,
                                choice_temperature=cfg.choice_temperature, cfg=cfg.cfg,
                                cfg_schedule=cfg.cfg_schedule, top_k=cfg.top_k, init_ids=init_ids,
                                generator=generator, history=history)
    model.train(was_training)
    return tokenizer.decode(tokens)
