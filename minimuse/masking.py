"""Which tokens are hidden: the masks of training and the counts of decoding, for MaskGIT and MAR alike.

Both families train by hiding a random subset of a token grid and predicting it, and both generate by revealing
tokens over a few steps on a schedule. A mask is always drawn the same way: a random order of the positions per
row, and the first n of that order hidden (`mask_by_order`).

    training  MaskGIT: n = ceil(r * L), r = cos(pi/2 * u) per example        (`sample_mask_rates`, `random_mask`)
              MAR:     n = ceil(r * L), r ~ truncated normal on [0.7, 1]     (`sample_mask_ratio`)
    decoding  n_t = floor(L * gamma((t + 1) / T)) still hidden after step t  (`num_masked_after`)

The random draws run outside any compiled graph (`torch.compiler.disable`): they then come from the global RNG
in the same order whether a generator is compiled or not, so a seed draws the same masks either way.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

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
    """How many tokens stay masked after `step` (0-based) of `steps`, per row (MaskGIT §3.2, eq. 3's count).

    n = floor(total * gamma((step+1)/steps)), but fewer than are masked now (every step decodes at least one
    token; decoded tokens are final) and at least 1 until the last step, so the last step still has something
    to decide. Where the two clash (more steps than tokens) the one masked token waits. 0 after the last step,
    and 0 for a row with nothing masked (an inpainting row given whole): its given tokens are never re-masked.
    total, masked_now: (B,) int counts of tokens to generate and tokens still masked.
    """
    if step == steps - 1:
        return torch.zeros_like(masked_now)
    n = torch.floor(total * mask_schedule(schedule)((step + 1) / steps)).long()
    return torch.where(masked_now > 0, torch.minimum(n, masked_now - 1).clamp(min=1), 0)


# ---------------------------------------------------------------------------------------------------------
# Training masks
# ---------------------------------------------------------------------------------------------------------

@torch.compiler.disable
def random_orders(batch: int, length: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B, L): each row a random permutation of the positions."""
    return torch.rand(batch, length, generator=generator, device=device).argsort(dim=1)


def mask_by_order(orders: torch.Tensor, num_masked: torch.Tensor) -> torch.Tensor:
    """(B, L) bool, True = masked: the first num_masked (B,) positions of each row's order are hidden; later ones
    are visible, so MAR's generation reveals tokens from the end of the order backwards."""
    rank = orders.argsort(dim=1)                                          # rank[b, pos] = place of pos in the order
    return rank < num_masked[:, None]


@torch.compiler.disable
def sample_mask_rates(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Masking rate per example, r = cos(pi/2 * u), u ~ U(0, 1) (Muse §2.5 / MaskGIT §3.2).

    r has density p(r) = 2/pi * (1 - r^2)^(-1/2) on [0, 1], mean 2/pi ~ 0.64: most examples are heavily masked,
    like the early steps of sampling.
    """
    u = torch.rand(batch, generator=generator, device=device)
    return torch.cos(math.pi / 2 * u)


def random_mask(rates: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) rates -> (B, L) bool mask with exactly clamp(ceil(r * L), 1, L) True (= masked) positions per row."""
    n = torch.ceil(rates * length).clamp(1, length).long()                         # (B,)
    return mask_by_order(random_orders(len(rates), length, generator, rates.device), n)


@torch.compiler.disable
def sample_mask_ratio(mask_ratio_min: float, generator: torch.Generator | None = None) -> float:
    """One training mask ratio from a normal centred at 1.0 with std 0.25, truncated to [min, 1] (MAR §3.3),
    drawn by inverting the truncated CDF: r = mu + sigma * Phi^-1(U(Phi(a), Phi(b)))."""
    mu, sigma = 1.0, 0.25
    lo, hi = (torch.special.ndtr(torch.tensor((v - mu) / sigma, dtype=torch.float64)) for v in (mask_ratio_min, 1.0))
    u = lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64)
    return float((mu + sigma * torch.special.ndtri(u)).clamp(mask_ratio_min, 1.0))
